"""Data for training: raw datasets (Hub, local files, or the embedded corpus), tokenization, packing, labels,
and the collators that make batches."""

import math
import re
from itertools import chain
from pathlib import Path

import torch
from datasets import ClassLabel, Dataset, DatasetDict, IterableDatasetDict, Value, load_dataset
from transformers import DataCollatorForLanguageModeling

from .arguments import UsageError

FILE_BUILDERS = {".txt": "text", ".text": "text", ".csv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}
DEFAULT_TEXT_COLUMNS = {
    "mlm": ("text",),
    "sequence-classification": ("sentence", "text"),
    "token-classification": ("tokens",),
}
DEFAULT_LABEL_COLUMNS = {"sequence-classification": ("label",), "token-classification": ("ner_tags",)}
EMBEDDED_CORPUS = "the Python documentation that CPython ships (pydoc_data)"


# ---------------------------------------------------------------------------------------------------------------------
# Raw datasets
# ---------------------------------------------------------------------------------------------------------------------


def embedded_corpus() -> Dataset:
    """The reference pages that every CPython carries for `help()`, one paragraph a row (about 0.5 MB of text)."""
    try:
        from pydoc_data.topics import topics
    except ImportError as error:
        raise UsageError(
            "This Python has no pydoc_data module, the built-in training corpus: name a dataset with "
            "--dataset_name or --train_file."
        ) from error
    paragraphs = [p.strip() for page in topics.values() for p in re.split(r"\n\s*\n", page)]
    return Dataset.from_dict({"text": [p for p in paragraphs if len(p) > 20]})


def load_raw_datasets(args) -> DatasetDict | IterableDatasetDict:
    """`train` and, where there is one, `validation`: from the Hub, local files, or the embedded corpus."""
    if args.dataset_name:
        try:
            raw = load_dataset(args.dataset_name, args.dataset_config_name, streaming=args.streaming)
        except Exception as error:  # datasets raises a different type per cause: missing, offline, bad config
            raise UsageError(f"Could not load the dataset {args.dataset_name!r}: {error}") from error
    elif args.train_file:
        raw = _load_files(args)
    elif args.task == "mlm":
        raw = DatasetDict(train=embedded_corpus())
        if args.streaming:
            raw = IterableDatasetDict(train=raw["train"].to_iterable_dataset(num_shards=4))
    else:
        raise UsageError(f"{args.task} needs data to learn from: pass --dataset_name or --train_file.")

    if "train" not in raw:
        raise UsageError(f"The dataset has no 'train' split (it has: {', '.join(raw)}).")
    if "validation" not in raw:
        raw = _hold_out_validation(raw, args)
    if args.max_train_samples is not None:
        raw["train"] = _take(raw["train"], args.max_train_samples)
    if args.max_eval_samples is not None and "validation" in raw:
        raw["validation"] = _take(raw["validation"], args.max_eval_samples)
    if not args.streaming and len(raw["train"]) == 0:
        raise UsageError("The training data is empty: there is nothing to train on.")
    return raw


def _load_files(args) -> DatasetDict | IterableDatasetDict:
    files = {"train": args.train_file}
    if args.validation_file:
        files["validation"] = args.validation_file
    builders = set()
    for split, file in files.items():
        path = Path(file)
        if not path.exists():
            raise UsageError(f"The {split} file {file} does not exist.")
        if path.suffix not in FILE_BUILDERS:
            raise UsageError(f"Cannot read {file}: use one of {', '.join(FILE_BUILDERS)} files.")
        builders.add(FILE_BUILDERS[path.suffix])
    if len(builders) > 1:
        raise UsageError(f"--train_file and --validation_file must have the same format, got {sorted(builders)}.")
    try:
        return load_dataset(builders.pop(), data_files=files, streaming=args.streaming)
    except Exception as error:
        raise UsageError(f"Could not read {', '.join(files.values())}: {error}") from error


def _hold_out_validation(raw, args):
    if args.streaming or args.validation_split_percentage <= 0 or len(raw["train"]) < 2:
        return raw
    split = raw["train"].train_test_split(test_size=args.validation_split_percentage / 100, seed=args.seed)
    return DatasetDict(train=split["train"], validation=split["test"])


def _take(dataset, n: int):
    return dataset.take(n) if not isinstance(dataset, Dataset) else dataset.select(range(min(n, len(dataset))))


def column_names(dataset) -> list[str]:
    """The columns of a dataset or stream. A stream read from files may not know its features until read:
    then its first example tells."""
    if dataset.column_names is not None:
        return list(dataset.column_names)
    first = next(iter(dataset), None)
    return list(first) if first is not None else []


def pick_column(dataset, requested: str | None, defaults: tuple[str, ...], what: str) -> str:
    """The column to read: the one asked for, else the first default present; a clear error otherwise."""
    columns = column_names(dataset)
    if not columns:
        raise UsageError("The dataset is empty: there is nothing to train on.")
    candidates = (requested,) if requested else defaults
    for name in candidates:
        if name in columns:
            return name
    option = "--text_column_name" if what == "text" else "--label_column_name"
    raise UsageError(
        f"The dataset has no {what} column {' or '.join(map(repr, candidates))}. Its columns are: "
        f"{', '.join(columns)}. Name the right one with {option}."
    )


# ---------------------------------------------------------------------------------------------------------------------
# Masked-LM data: packed blocks, masked dynamically
# ---------------------------------------------------------------------------------------------------------------------


def pack_for_mlm(raw, tokenizer, text_column: str, args, main_process_first):
    """Tokenize, concatenate every text with [SEP] between them, cut into [CLS] … [SEP] blocks of max_seq_length,
    and number the blocks (the masking is seeded per block)."""
    body = args.max_seq_length - 2
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    if cls is None or sep is None or tokenizer.mask_token_id is None:
        raise UsageError("Masked-LM training needs a tokenizer with [CLS], [SEP] and [MASK] tokens.")

    def tokenize(batch):
        # Texts longer than a block are expected: packing cuts them.
        return tokenizer(batch[text_column], add_special_tokens=False, return_attention_mask=False, verbose=False)

    def pack(batch):
        ids = list(chain.from_iterable(seq + [sep] for seq in batch["input_ids"] if seq))
        blocks = [[cls] + ids[i : i + body] + [sep] for i in range(0, len(ids) - body + 1, body)]
        return {"input_ids": blocks}

    packed = {}
    for split, dataset in raw.items():
        columns = column_names(dataset)
        map_kwargs = {} if args.streaming else _map_options(args)  # a stream maps lazily, without a cache
        with main_process_first():
            tokens = dataset.map(tokenize, batched=True, remove_columns=columns, **map_kwargs)
            blocks = tokens.map(pack, batched=True, batch_size=1000, **map_kwargs)
            blocks = blocks.map(_number, batched=True, with_indices=True, **map_kwargs)
        if not args.streaming and len(blocks) == 0:
            raise UsageError(
                f"The {split} text is shorter than one block of --max_seq_length={args.max_seq_length} tokens."
            )
        packed[split] = blocks
    return packed


def _map_options(args) -> dict:
    """datasets.map in parallel where asked, reusing its cache unless --overwrite_cache."""
    return {"num_proc": args.preprocessing_num_workers, "load_from_cache_file": not args.overwrite_cache}


def _number(batch, indices):
    return {"example_id": list(indices)}


class SeededMaskingCollator:
    """BERT's dynamic masking (DataCollatorForLanguageModeling: 15 % of tokens; of those 80 % [MASK], 10 % a random
    token, 10 % unchanged), with the random draws seeded by (seed, epoch, block number). Every block is then masked
    the same way whatever the number of processes or where a run resumed, so those runs end with equal weights."""

    def __init__(self, tokenizer, mlm_probability: float, seed: int):
        self.masker = DataCollatorForLanguageModeling(tokenizer, mlm_probability=mlm_probability)
        self.tokenizer = tokenizer
        self.seed = seed
        self.epoch = 0

    def __call__(self, examples):
        input_ids, labels = [], []
        for example in examples:
            ids = torch.tensor([example["input_ids"]])
            special = torch.tensor([self.tokenizer.get_special_tokens_mask(ids[0].tolist(), already_has_special_tokens=True)])
            self.masker.generator = torch.Generator().manual_seed(
                (self.seed * 1_000_003 + self.epoch * 7_919 + int(example["example_id"])) % 2**63
            )
            masked, target = self.masker.torch_mask_tokens(ids, special_tokens_mask=special)
            input_ids.append(masked[0])
            labels.append(target[0])
        return {"input_ids": torch.stack(input_ids), "labels": torch.stack(labels)}


# ---------------------------------------------------------------------------------------------------------------------
# Fine-tuning data: labels
# ---------------------------------------------------------------------------------------------------------------------


def label_mapping(dataset: Dataset, column: str, per_token: bool) -> tuple[list[str], dict] | None:
    """The label names in a stable order (ClassLabel names, else sorted values) and the map from the values in
    the column to label ids; None for regression targets (float values)."""
    feature = dataset.features[column]
    inner = getattr(feature, "feature", feature)  # Sequence/List of labels for token classification
    if isinstance(inner, ClassLabel):
        return list(inner.names), {i: i for i in range(len(inner.names))}
    values = dataset[column]
    if per_token:
        values = list(chain.from_iterable(values))
    if isinstance(inner, Value) and inner.dtype.startswith("float"):
        if any(not float(v).is_integer() for v in values if v is not None and not math.isnan(v)):
            return None
        values = [int(v) for v in values]
    labels = sorted(set(values), key=lambda v: (str(type(v)), v))
    return [str(v) for v in labels], {v: i for i, v in enumerate(labels)}


def encode_for_sequence_classification(dataset, tokenizer, text_column, label_column, label_to_id, args):
    def encode(batch):
        encoded = tokenizer(batch[text_column], truncation=True, max_length=args.max_seq_length)
        labels = batch[label_column]
        encoded["labels"] = [float(v) for v in labels] if label_to_id is None else [_label_id(v, label_to_id) for v in labels]
        return encoded

    return dataset.map(encode, batched=True, remove_columns=dataset.column_names, **_map_options(args))


def encode_for_token_classification(dataset, tokenizer, text_column, label_column, label_to_id, args):
    """Words → sub-word pieces; each word's label goes on its first piece, -100 on the others (unless
    --label_all_tokens) and on special tokens."""
    if not tokenizer.is_fast:
        raise UsageError("Token classification needs a fast tokenizer (it maps pieces back to words).")

    def encode(batch):
        encoded = tokenizer(batch[text_column], is_split_into_words=True, truncation=True, max_length=args.max_seq_length)
        encoded["labels"] = []
        for row, tags in enumerate(batch[label_column]):
            previous, labels = None, []
            for word in encoded.word_ids(row):
                if word is None or (word == previous and not args.label_all_tokens):
                    labels.append(-100)
                else:
                    labels.append(_label_id(tags[word], label_to_id))
                previous = word
            encoded["labels"].append(labels)
        return encoded

    return dataset.map(encode, batched=True, remove_columns=dataset.column_names, **_map_options(args))


def _label_id(value, label_to_id):
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if value not in label_to_id:
        raise UsageError(
            f"Label {value!r} is not one of the training labels ({', '.join(map(str, label_to_id))})."
        )
    return label_to_id[value]
