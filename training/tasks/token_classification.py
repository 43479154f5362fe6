"""Token classification (named entities, part-of-speech tags): one tag per word, read off the word's first
sub-word piece."""

from transformers import AutoModelForTokenClassification, DataCollatorForTokenClassification

from ..errors import UsageError
from ..labels import label_id
from ..metrics import entity_scores
from .classification import ClassificationTask


class TokenClassification(ClassificationTask):
    name = "token-classification"
    auto_class = AutoModelForTokenClassification
    pipeline_tag = "token-classification"
    title = "Token classification"
    metric = "f1"
    card_metrics = ("f1", "accuracy")
    text_columns = ("tokens",)
    label_columns = ("ner_tags",)
    per_token = True
    collator_class = DataCollatorForTokenClassification

    def add_arguments(self, group):
        group.add_argument(
            "--label_all_tokens",
            action="store_true",
            help="label every sub-word piece, not only the first of each word",
        )

    def prepare(self, args, raw, tokenizer, accelerator, start_config):
        if not tokenizer.is_fast:
            raise UsageError("Token classification needs a fast tokenizer (it maps pieces back to words).")
        data = super().prepare(args, raw, tokenizer, accelerator, start_config)
        if data.labels is None:
            raise UsageError(f"Token labels in {data.columns['label']!r} must be tags or class ids, not real numbers.")
        return data

    def encoder(self, tokenizer, columns, value_to_id, args):
        """Words → sub-word pieces; each word's label goes on its first piece, -100 on the others (unless
        --label_all_tokens) and on special tokens."""

        def encode(batch):
            encoded = tokenizer(
                batch[columns["text"]], is_split_into_words=True, truncation=True, max_length=args.max_seq_length
            )
            encoded["labels"] = []
            for row, tags in enumerate(batch[columns["label"]]):
                previous, labels = None, []
                for word in encoded.word_ids(row):
                    if word is None or (word == previous and not args.label_all_tokens):
                        labels.append(-100)
                    else:
                        labels.append(label_id(tags[word], value_to_id))
                    previous = word
                encoded["labels"].append(labels)
            return encoded

        return encode

    def evaluate(self, accelerator, model, loader, data) -> dict:
        predictions, references, eval_loss = self.predict(accelerator, model, loader, data)
        names = data.labels
        rows = [[(names[p], names[g]) for p, g in zip(ps, gs) if g != -100] for ps, gs in zip(predictions, references)]
        scores = entity_scores([[p for p, _ in row] for row in rows], [[g for _, g in row] for row in rows])
        return {"eval_loss": eval_loss, **scores}


TASK = TokenClassification()
