"""Raw data for training: datasets from the Hub, local files, or the embedded corpus, and the columns to read.
Each task tokenizes it its own way (`tasks/`)."""

import codecs
import re
from pathlib import Path

from datasets import Dataset, DatasetDict, IterableDatasetDict, load_dataset

from .errors import UsageError

FILE_BUILDERS = {".txt": "text", ".text": "text", ".csv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}
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


def load_raw_datasets(args, task) -> DatasetDict | IterableDatasetDict:
    """`train` and, where there is one, `validation`: from the Hub, local files, or (pretraining) the embedded
    corpus."""
    if args.dataset_name:
        try:
            raw = load_dataset(args.dataset_name, args.dataset_config_name, streaming=args.streaming)
        except Exception as error:  # datasets raises a different type per cause: missing, offline, bad config
            raise UsageError(f"Could not load the dataset {args.dataset_name!r}: {error}") from error
    elif args.train_file:
        raw = _load_files(args)
    elif task.pretraining:
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
        if path.suffix != ".parquet":
            _check_text_file(path, split, whole=not args.streaming)
    if len(builders) > 1:
        raise UsageError(f"--train_file and --validation_file must have the same format, got {sorted(builders)}.")
    try:
        raw = load_dataset(builders.pop(), data_files=files, streaming=args.streaming)
    except Exception as error:
        raise UsageError(f"Could not read {', '.join(files.values())}: {error}") from error
    for split, file in files.items():
        if not args.streaming and len(raw[split]) == 0:
            raise UsageError(f"The {split} file {file} is empty: it has no rows.")
    return raw


def _check_text_file(path: Path, split: str, whole: bool):
    """A text file with rows in it (a CSV: besides its header), in UTF-8 (all of it; streamed, its first
    megabyte)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset, lines = 0, 0
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            try:
                text = decoder.decode(chunk)
            except UnicodeDecodeError as error:  # error.object: the decoder's held-back bytes, then this chunk
                position = offset - (len(error.object) - len(chunk)) + error.start
                raise UsageError(
                    f"The {split} file {path} is not UTF-8 text: byte {error.object[error.start]:#04x} at offset "
                    f"{position} cannot be decoded. Convert it to UTF-8 (e.g. iconv -f latin1 -t utf-8)."
                ) from error
            offset += len(chunk)
            lines = min(2, lines + sum(1 for line in text.splitlines() if line.strip()))
            if not whole and lines == 2:
                return
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError as error:
            raise UsageError(f"The {split} file {path} is not UTF-8 text: it ends inside a character.") from error
    if lines == 0 or (lines == 1 and path.suffix == ".csv"):
        raise UsageError(f"The {split} file {path} is empty{': it has only a header' if lines else ''}.")


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


def pick_column(dataset, requested: str | None, defaults: tuple[str, ...], option: str) -> str:
    """The column to read: the one asked for (with `option`), else the first default present; a clear error
    otherwise."""
    columns = column_names(dataset)
    if not columns:
        raise UsageError("The dataset is empty: there is nothing to train on.")
    candidates = (requested,) if requested else defaults
    for name in candidates:
        if name in columns:
            return name
    what = option.removeprefix("--").removesuffix("_column_name").replace("_", " ")
    raise UsageError(
        f"The dataset has no {what} column {' or '.join(map(repr, candidates))}. Its columns are: "
        f"{', '.join(columns)}. Name the right one with {option}."
    )


def text_columns(dataset) -> list[str]:
    """The columns that hold strings."""
    return [name for name, feature in dataset.features.items() if getattr(feature, "dtype", None) in ("string", "large_string")]


def map_options(args) -> dict:
    """datasets.map in parallel where asked, reusing its cache unless --overwrite_cache."""
    return {"num_proc": args.preprocessing_num_workers, "load_from_cache_file": not args.overwrite_cache}
