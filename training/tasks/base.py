"""What a training task is: the contract between the loop in `run.py` and one task module.

`run.py` never asks which task it runs; it asks the task object. A new task is one module in this package with one
`Task` subclass, listed in `tasks/__init__.py`: its options appear in `--help`, its name on the command line.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from transformers import AutoConfig

from ..errors import UsageError


@dataclass
class TaskData:
    """A task's data, ready for the loop: tokenized splits, the collators that batch them, and what the head,
    evaluation and the model card need to know."""

    train: Any
    validation: Any | None
    collator: Callable
    eval_collator: Callable
    labels: list[str] | None = None  # class names in id order, for a classification head
    columns: dict[str, str] = field(default_factory=dict)  # the data columns read, by role: {"text": "sentence1"}
    extras: dict = field(default_factory=dict)  # what evaluation needs besides the batches


class Task:
    name: str  # on the command line
    auto_class: type  # the AutoModelFor… class of its head
    pipeline_tag: str | None  # the Hub's task: model card metadata and `pipeline(...)`; None where there is none
    title: str  # for people, in the model card
    metric: str  # the headline metric of the model card
    card_metrics: tuple[str, ...] = ()  # metrics the model card lists
    text_columns: tuple[str, ...] = ()  # the text column looked for when --text_column_name is not given
    # A pretraining task may start from nothing: a tokenizer trained on its text, a model sized by the model-size
    # options, the built-in corpus when no data is named, and streamed data.
    pretraining: bool = False
    defaults: ClassVar[dict] = {}  # this task's own first column of arguments.RUN_DEFAULTS

    def add_arguments(self, group):
        """The task's own options, shown in `--help` under the task's name."""

    def check_arguments(self, args):
        """Checks between the task's options; raise UsageError."""

    def prepare(self, args, raw, tokenizer, accelerator, start_config) -> TaskData:
        """Check the raw data, tokenize it, and choose collators. Writes nothing to the output folder.
        `start_config`: the config of the checkpoint the run starts from (`starting_config`), loaded once."""
        raise NotImplementedError

    def model_kwargs(self, data: TaskData) -> dict:
        """Config values of the head (labels, problem type), given to `from_pretrained` / the config."""
        return {}

    def training_model(self, model, args, tokenizer, data: TaskData) -> torch.nn.Module:
        """The module the loop trains, built around the model the options named (loaded or created as
        `auto_class`). It has the model's `config` and a `save_pretrained(folder, is_main_process, state_dict)`
        that writes what the run exports. Default: the model itself."""
        return model

    def training_overrides(self, config) -> dict:
        """Config values that hold while training only; the exported model keeps its own."""
        return {}

    def loss_items(self, batch: dict) -> torch.Tensor | None:
        """How many items the summed loss of this micro-batch covers, for normalising a step's loss over the whole
        global batch; None when the model's loss is a plain mean (regression). A vector where the loss has several
        terms, each with its own count: the model gets the global vector as `num_items_in_batch`."""
        return None

    def evaluate(self, accelerator, model, loader, data: TaskData) -> dict:
        raise NotImplementedError

    def card_tags(self) -> list[str]:
        return [self.pipeline_tag]

    def card_notes(self, args, metrics: dict) -> str:
        """What the model card says about how this model was made, beyond the task and data."""
        return ""

    def card_usage(self, model_name: str) -> str:
        """The model card's "Use" section."""
        return f"""```python
from transformers import pipeline
pipe = pipeline("{self.pipeline_tag}", model="{model_name}", trust_remote_code=True)
```"""


def starting_config(args):
    """The config of the model the run starts from (--model_name_or_path, else --config_name); None for a new
    TransformerEncoderConfig."""
    name = args.model_name_or_path or args.config_name
    return load_config(name) if name else None


def load_config(name: str, role: str = "checkpoint"):
    """A checkpoint's config; a clear error naming it (as `role`) where it cannot be loaded."""
    try:
        return AutoConfig.from_pretrained(name)
    except Exception as error:
        raise UsageError(f"Could not load the {role} {name}: {error}") from error
