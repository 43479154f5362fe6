"""Sequence classification and regression: one label (or one real number) per text or pair of texts (GLUE's
shapes: SST-2 one sentence; MRPC, RTE, MNLI, QNLI, QQP, STS-B two)."""

from accelerate.logging import get_logger
from transformers import AutoModelForSequenceClassification, DataCollatorWithPadding

from ..data import pick_column, text_columns
from ..labels import label_id
from ..metrics import accuracy, regression_scores
from .classification import ClassificationTask

# The column pairs of GLUE, SuperGLUE's BoolQ and common NLI files, looked for in this order (as transformers'
# run_glue_no_trainer.py reads them) when no column is named.
PAIR_COLUMNS = (
    ("sentence1", "sentence2"),
    ("premise", "hypothesis"),
    ("question", "sentence"),
    ("question1", "question2"),
    ("question", "passage"),
    ("text", "text_pair"),
)
logger = get_logger(__name__)


def tokenize_texts(tokenizer, batch: dict, columns: dict, max_length: int):
    """A batch of rows' text, or pairs of texts (`columns["text_pair"]`), as the model reads them: a pair too long for
    max_length loses tokens from the longer text first."""
    pair = columns.get("text_pair")
    texts = (batch[columns["text"]], batch[pair]) if pair else (batch[columns["text"]],)
    return tokenizer(*texts, truncation="longest_first", max_length=max_length)


class SequenceClassification(ClassificationTask):
    name = "sequence-classification"
    auto_class = AutoModelForSequenceClassification
    pipeline_tag = "text-classification"
    title = "Text classification"
    metric = "accuracy"
    card_metrics = ("accuracy", "spearmanr", "pearson", "mse")
    text_columns = ("sentence", "text")
    collator_class = DataCollatorWithPadding

    def add_arguments(self, group):
        group.add_argument(
            "--text_pair_column_name",
            help="the second text of a pair (found without it: "
            + ", ".join("/".join(pair) for pair in PAIR_COLUMNS)
            + "); it goes through the tokenizer with the first as [CLS] a [SEP] b [SEP]",
        )

    def columns(self, args, raw) -> dict[str, str]:
        train = raw["train"]
        if args.text_pair_column_name:
            text = pick_column(train, args.text_column_name, self.text_columns, "--text_column_name")
            columns = {"text": text, "text_pair": args.text_pair_column_name}
        elif args.text_column_name:
            columns = {"text": args.text_column_name}
        else:
            present = set(train.column_names)
            pair = next((pair for pair in PAIR_COLUMNS if set(pair) <= present), None)
            columns = dict(zip(("text", "text_pair"), pair)) if pair else {}
        if "text" not in columns:
            columns["text"] = pick_column(train, None, self.text_columns, "--text_column_name")
        columns["label"] = pick_column(train, args.label_column_name, self.label_columns, "--label_column_name")
        self.check_columns(raw, columns)
        unused = [c for c in text_columns(train) if c not in columns.values()]
        if unused:
            logger.warning(
                f"Reading {' + '.join(repr(columns[r]) for r in ('text', 'text_pair') if r in columns)}; the text "
                f"column(s) {', '.join(map(repr, unused))} are left unused (name them with --text_column_name / "
                "--text_pair_column_name to read them)."
            )
        return columns

    def encoder(self, tokenizer, columns, value_to_id, args):
        def encode(batch):
            encoded = tokenize_texts(tokenizer, batch, columns, args.max_seq_length)
            labels = batch[columns["label"]]
            if value_to_id is None:
                encoded["labels"] = [float(v) for v in labels]
            else:
                encoded["labels"] = [label_id(v, value_to_id) for v in labels]
            return encoded

        return encode

    def evaluate(self, accelerator, model, loader, data) -> dict:
        predictions, references, eval_loss = self.predict(accelerator, model, loader, data)
        if data.labels is None:
            return {"eval_loss": eval_loss, **regression_scores(predictions, references)}
        return {"eval_loss": eval_loss, "accuracy": accuracy(predictions, references)}


TASK = SequenceClassification()
