"""The training tasks, one module each. To add one: a module with a `Task` subclass (see `base.py`) and its
`TASK` object, listed here; the command line, `--help`, the loop and the model card pick it up."""

from . import distill, mlm, question_answering, rtd, sequence_classification, token_classification
from .base import Task, TaskData

TASKS: dict[str, Task] = {
    module.TASK.name: module.TASK
    for module in (mlm, rtd, sequence_classification, token_classification, question_answering, distill)
}

__all__ = ["TASKS", "Task", "TaskData"]
