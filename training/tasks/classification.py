"""What sequence and token classification share: a text and a label column, label names read from the data (or
a regression target), and a loss averaged over the labelled items of a step."""

import torch

from ..data import map_options, pick_column
from ..labels import check_labels, label_mapping, match_checkpoint_labels
from .base import Task, TaskData


class ClassificationTask(Task):
    label_columns: tuple[str, ...] = ("label",)
    per_token = False
    collator_class: type  # pads a batch of the encoded examples

    def prepare(self, args, raw, tokenizer, accelerator, start_config) -> TaskData:
        columns = self.columns(args, raw)
        label_column = columns["label"]
        for split, dataset in raw.items():
            check_labels(dataset, label_column, split, self.per_token)
        mapping = label_mapping(raw["train"], label_column, self.per_token)
        names, value_to_id = self.match_labels(args, start_config, *(mapping or (None, None)))
        encoded = {}
        with accelerator.main_process_first():
            for split, dataset in raw.items():
                encode = self.encoder(tokenizer, columns, value_to_id, args)
                encoded[split] = dataset.map(encode, batched=True, remove_columns=dataset.column_names, **map_options(args))
        pad_to = 8 if accelerator.mixed_precision != "no" else None
        collator = self.collator_class(tokenizer, pad_to_multiple_of=pad_to)
        return TaskData(
            train=encoded["train"],
            validation=encoded.get("validation"),
            collator=collator,
            eval_collator=collator,
            labels=names,
            columns=columns,
        )

    def match_labels(self, args, start_config, names, value_to_id):
        """The label names in id order and the map from data values to ids (None, None for regression): a
        checkpoint already fine-tuned for these labels keeps its ids."""
        return match_checkpoint_labels(args, start_config, self.auto_class, names, value_to_id)

    def columns(self, args, raw) -> dict[str, str]:
        """The data columns to read, by role, present in every split."""
        columns = {
            "text": pick_column(raw["train"], args.text_column_name, self.text_columns, "--text_column_name"),
            "label": pick_column(raw["train"], args.label_column_name, self.label_columns, "--label_column_name"),
        }
        self.check_columns(raw, columns)
        return columns

    @staticmethod
    def check_columns(raw, columns: dict[str, str]):
        for dataset in raw.values():
            for role, column in columns.items():
                pick_column(dataset, column, (), f"--{role}_column_name")

    def encoder(self, tokenizer, columns: dict, value_to_id: dict | None, args):
        """A batched `datasets.map` function: raw rows → input ids and labels."""
        raise NotImplementedError

    def model_kwargs(self, data: TaskData) -> dict:
        if data.labels is None:
            return {"num_labels": 1, "problem_type": "regression"}
        return {"id2label": dict(enumerate(data.labels)), "label2id": {n: i for i, n in enumerate(data.labels)}}

    def loss_items(self, batch):
        labels = batch["labels"]
        return (labels != -100).sum() if labels.dtype == torch.long else None  # regression: the mean squared error

    @torch.no_grad()
    def predict(self, accelerator, model, loader, data: TaskData):
        """Predictions and gold labels of every validation example, gathered from all processes, and the mean
        loss."""
        model.eval()
        predictions, references, losses = [], [], []
        for batch in loader:
            outputs = model(**batch)
            losses.append(accelerator.gather_for_metrics(outputs.loss.detach().repeat(len(batch["labels"]))))
            predicted = outputs.logits.squeeze(-1) if data.labels is None else outputs.logits.argmax(-1)
            gold = batch["labels"]
            if self.per_token:  # sequences differ in length across processes
                predicted = accelerator.pad_across_processes(predicted, dim=1, pad_index=-100)
                gold = accelerator.pad_across_processes(gold, dim=1, pad_index=-100)
            predicted, gold = accelerator.gather_for_metrics((predicted, gold))
            predictions += predicted.tolist()
            references += gold.tolist()
        return predictions, references, torch.cat(losses).mean().item()
