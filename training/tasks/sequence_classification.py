"""Sequence classification and regression: one label (or one real number) per text."""

from transformers import AutoModelForSequenceClassification, DataCollatorWithPadding

from ..labels import label_id
from ..metrics import accuracy
from .classification import ClassificationTask


class SequenceClassification(ClassificationTask):
    name = "sequence-classification"
    auto_class = AutoModelForSequenceClassification
    pipeline_tag = "text-classification"
    title = "Text classification"
    metric = "accuracy"
    card_metrics = ("accuracy",)
    text_columns = ("sentence", "text")
    collator_class = DataCollatorWithPadding

    def encoder(self, tokenizer, columns, value_to_id, args):
        def encode(batch):
            encoded = tokenizer(batch[columns["text"]], truncation=True, max_length=args.max_seq_length)
            labels = batch[columns["label"]]
            if value_to_id is None:
                encoded["labels"] = [float(v) for v in labels]
            else:
                encoded["labels"] = [label_id(v, value_to_id) for v in labels]
            return encoded

        return encode

    def evaluate(self, accelerator, model, loader, data) -> dict:
        predictions, references, eval_loss = self.predict(accelerator, model, loader, data)
        metrics = {"eval_loss": eval_loss}
        if data.labels is not None:
            metrics["accuracy"] = accuracy(predictions, references)
        return metrics


TASK = SequenceClassification()
