"""Labels of fine-tuning data: the class names and ids read from the data, kept in line with a checkpoint that
was already fine-tuned."""

import math
from itertools import chain

from datasets import ClassLabel, Value

from .errors import UsageError


def check_labels(dataset, column: str, split: str, per_token: bool):
    """Every example has a label, and a label column holds either numbers or names, not both."""
    feature = dataset.features[column]
    if isinstance(getattr(feature, "feature", feature), ClassLabel):
        return
    rows = dataset[column]
    blank = [i for i, value in enumerate(rows) if _blank(value) or (per_token and any(_blank(v) for v in value))]
    if blank:
        shown = ", ".join(str(i + 1) for i in blank[:5]) + (", ..." if len(blank) > 5 else "")
        raise UsageError(
            f"{len(blank)} of {len(rows)} {split} examples have no label in column {column!r} (rows {shown}; the "
            "first example is row 1). Fill them in or remove those rows."
        )
    values = list(chain.from_iterable(rows)) if per_token else rows
    if any(isinstance(v, str) for v in values):
        numbers = sorted({v for v in values if _is_number(v)})
        words = sorted({v for v in values if not _is_number(v)})
        if numbers and words:
            raise UsageError(
                f"The {split} label column {column!r} mixes numbers ({', '.join(numbers[:5])}) and words "
                f"({', '.join(words[:5])}): use one kind of label."
            )


def _blank(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or (isinstance(value, str) and not value.strip())


def _is_number(value) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def label_mapping(dataset, column: str, per_token: bool) -> tuple[list[str], dict] | None:
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


def label_id(value, label_to_id: dict) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if value not in label_to_id:
        raise UsageError(f"Label {value!r} is not one of the training labels ({', '.join(map(str, label_to_id))}).")
    return label_to_id[value]


def match_checkpoint_labels(args, config, auto_class, names, value_to_id):
    """A checkpoint (its `config`) already fine-tuned for this task keeps its label ids; a different label set is
    an error (unless --ignore_mismatched_sizes re-initialises the head)."""
    if names is None or not args.model_name_or_path:
        return names, value_to_id
    head = auto_class.__name__.removeprefix("AutoModel")
    fine_tuned = any(a.endswith(head) for a in config.architectures or [])
    if not fine_tuned or args.ignore_mismatched_sizes:
        return names, value_to_id
    theirs = [config.id2label[i] for i in range(config.num_labels)]
    if sorted(theirs) != sorted(names):
        raise UsageError(
            f"The checkpoint {args.model_name_or_path} was fine-tuned with {config.num_labels} labels ({theirs}), "
            f"but the data has {len(names)} ({names}). Use a checkpoint trained for these labels, a pretrained "
            "(masked-LM) checkpoint, or --ignore_mismatched_sizes to start a new head."
        )
    by_name = {name: theirs.index(name) for name in names}
    return theirs, {value: by_name[names[i]] for value, i in value_to_id.items()}
