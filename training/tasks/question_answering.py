"""Extractive question answering (SQuAD v1.1 and v2.0): the answer is a span of the context, predicted as its
first and last token. Long contexts are cut into overlapping windows; predictions go back to characters through
the offsets and are scored with SQuAD's exact match and F1. Option names are those of transformers'
`run_qa_no_trainer.py`."""

from typing import ClassVar

import torch
from datasets import Dataset
from transformers import AutoModelForQuestionAnswering, DataCollatorWithPadding

from ...question_answering import answer_positions, best_spans, make_windows
from ..data import map_options, pick_column
from ..errors import UsageError
from ..metrics import squad_scores
from ..option_types import any_float, positive_int
from .base import Task, TaskData


class QuestionAnswering(Task):
    name = "question-answering"
    auto_class = AutoModelForQuestionAnswering
    pipeline_tag = "question-answering"
    title = "Extractive question answering"
    metric = "f1"
    card_metrics = ("exact_match", "f1")
    defaults: ClassVar[dict] = {"max_seq_length": 384}

    def add_arguments(self, group):
        group.add_argument("--question_column_name", default="question", help="the question column")
        group.add_argument("--context_column_name", default="context", help="the context column")
        group.add_argument(
            "--answer_column_name",
            default="answers",
            help="the answers column: {text: [...], answer_start: [...]} (character offsets into the context)",
        )
        group.add_argument(
            "--doc_stride", type=positive_int, default=128, help="tokens shared by neighbouring windows of a long context"
        )
        group.add_argument("--max_answer_length", type=positive_int, default=30, help="longest answer, in tokens")
        group.add_argument("--n_best_size", type=positive_int, default=20, help="start and end candidates per window")
        group.add_argument(
            "--version_2_with_negative", action="store_true", help="SQuAD v2: some questions have no answer"
        )
        group.add_argument(
            "--null_score_diff_threshold",
            type=any_float,
            default=0.0,
            help="v2: answer nothing when the no-answer score beats the best span's by more than this",
        )

    def check_arguments(self, args):
        if args.doc_stride >= args.max_seq_length // 2:
            raise UsageError(
                f"--doc_stride {args.doc_stride} must be below half of --max_seq_length {args.max_seq_length}: "
                "windows share doc_stride tokens, and the question takes room too"
            )

    def prepare(self, args, raw, tokenizer, accelerator, start_config) -> TaskData:
        if not tokenizer.is_fast:
            raise UsageError("Question answering needs a fast tokenizer: it maps tokens back to characters.")
        columns = {
            role: pick_column(raw["train"], getattr(args, f"{role}_column_name"), (), f"--{role}_column_name")
            for role in ("question", "context", "answer")
        }
        for split, dataset in raw.items():
            for role, column in columns.items():
                pick_column(dataset, column, (), f"--{role}_column_name")
            check_answers(dataset, columns, split, args.version_2_with_negative)

        def encode_for_training(batch):
            windows = self.windows(tokenizer, batch, columns, args)
            starts, ends = answer_positions(windows, batch[columns["answer"]])
            return {**windows.encoding, "start_positions": starts, "end_positions": ends}

        with accelerator.main_process_first():
            train = raw["train"].map(
                encode_for_training, batched=True, remove_columns=raw["train"].column_names, **map_options(args)
            )
        validation, extras = None, {}
        if "validation" in raw:
            examples = raw["validation"]
            windows = self.windows(tokenizer, examples, columns, args)
            validation = Dataset.from_dict(windows.encoding)
            extras = {
                "windows": windows,
                "contexts": list(examples[columns["context"]]),
                "ids": list(examples["id"]) if "id" in examples.column_names else list(range(len(examples))),
                "answers": [a["text"] for a in examples[columns["answer"]]],
                "decoding": {
                    "n_best_size": args.n_best_size,
                    "max_answer_length": args.max_answer_length,
                    "allow_no_answer": args.version_2_with_negative,
                    "null_score_diff_threshold": args.null_score_diff_threshold,
                },
            }
        pad_to = 8 if accelerator.mixed_precision != "no" else None
        collator = DataCollatorWithPadding(tokenizer, pad_to_multiple_of=pad_to)
        return TaskData(train, validation, collator, collator, columns=columns, extras=extras)

    @staticmethod
    def windows(tokenizer, batch, columns, args):
        try:
            return make_windows(
                tokenizer, batch[columns["question"]], batch[columns["context"]], args.max_seq_length, args.doc_stride
            )
        except ValueError as error:
            raise UsageError(f"{error} (--max_seq_length, --doc_stride)") from error

    def loss_items(self, batch):
        return torch.tensor(len(batch["start_positions"]))  # windows: each has a start and an end target

    @torch.no_grad()
    def evaluate(self, accelerator, model, loader, data) -> dict:
        model.eval()
        starts, ends = [], []
        for batch in loader:
            outputs = model(**batch)
            # windows differ in length across processes: pad with a logit no span takes
            logits = [accelerator.pad_across_processes(x, dim=1, pad_index=-1e4) for x in (outputs.start_logits, outputs.end_logits)]
            start_logits, end_logits = accelerator.gather_for_metrics(tuple(logits))
            starts += list(start_logits.cpu())
            ends += list(end_logits.cpu())
        extras = data.extras
        windows = extras["windows"]
        by_example = {}
        for start_logits, end_logits, offsets, example in zip(starts, ends, windows.offsets, windows.example):
            by_example.setdefault(example, []).append((start_logits, end_logits, offsets))
        predictions = {
            extras["ids"][i]: best_spans(extras["contexts"][i], spans, **extras["decoding"])[0]["answer"]
            for i, spans in by_example.items()
        }
        return squad_scores(predictions, dict(zip(extras["ids"], extras["answers"])))


def check_answers(dataset, columns: dict, split: str, negatives_allowed: bool):
    """Every answer is {text: [...], answer_start: [...]} and each answer_start points at its text in the context;
    a question without an answer needs --version_2_with_negative."""
    ids = list(dataset["id"]) if "id" in dataset.column_names else [f"row {i + 1}" for i in range(len(dataset))]
    for qid, context, answers in zip(ids, dataset[columns["context"]], dataset[columns["answer"]]):
        if not isinstance(answers, dict) or not {"text", "answer_start"} <= answers.keys():
            raise UsageError(
                f"{split} example {qid}: {columns['answer']!r} must be {{text: [...], answer_start: [...]}}, got "
                f"{answers!r}."
            )
        if len(answers["text"]) != len(answers["answer_start"]):
            raise UsageError(f"{split} example {qid}: {len(answers['text'])} answer texts but "
                             f"{len(answers['answer_start'])} answer_start offsets.")
        if not answers["text"] and not negatives_allowed:
            raise UsageError(
                f"{split} example {qid} has no answer: pass --version_2_with_negative for data where some "
                "questions have none (SQuAD v2)."
            )
        for text, start in zip(answers["text"], answers["answer_start"]):
            if context[start : start + len(text)] != text:
                raise UsageError(
                    f"{split} example {qid}: answer_start {start} does not point at its answer {text!r} (the "
                    f"context has {context[start : start + len(text)]!r} there)."
                )


TASK = QuestionAnswering()
