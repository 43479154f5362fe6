"""One training run, top-down: options → accelerator → data → tokenizer → model → optimizer and schedule →
`accelerator.prepare` → loop (forward, backward, step, log, evaluate, checkpoint) → export with a model card.
The task (`tasks/`) supplies the data, collators, head, loss normalisation and metrics; the loop is the same for
every task. Nothing is written to the output folder before every check has passed; Ctrl-C saves a checkpoint.

The same code runs under `python -m`, `accelerate launch` (one CPU, one or many GPUs, several nodes), and
`torchrun`. Three details keep runs exact across those set-ups:
- the loss of a step is normalised by the number of labelled items in the whole step (all micro-batches of the
  accumulation, all processes), not by each micro-batch's own count;
- the learning-rate schedule is stepped once per optimizer step (a prepared scheduler would step once per process);
- masking is seeded per block, and resuming skips exactly the batches already seen.
"""

import contextlib
import itertools
import json
import math
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from accelerate import Accelerator, DataLoaderConfiguration
from accelerate.utils import broadcast_object_list, set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import AutoConfig, AutoTokenizer, get_scheduler

from .. import TransformerEncoderConfig
from . import data as training_data
from .arguments import DROPOUT_OPTIONS, MODEL_OPTIONS, parse_args
from .card import write_model_card
from .checkpoints import (
    Interruption,
    check_output_dir,
    load_state,
    resolve_resume,
    resume_command,
    save_checkpoint,
)
from .errors import UsageError
from .launch import check_launch
from .tasks import TASKS
from .tasks.base import starting_config
from .tokenizer import train_tokenizer

HUB_IGNORE = ["checkpoints/*", "logs/*"]


def main(argv: list[str] | None = None):
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    try:
        train(args, argv)
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


def train(args, argv: list[str] | None = None):
    """One run, in the shape of accelerate's `complete_nlp_example.py`; `argv`, the command line, is printed back
    (as the command that resumes) if it is interrupted."""
    task = TASKS[args.task]
    accelerator = Accelerator(
        mixed_precision=args.mixed_precision,
        log_with=args.report_to if args.with_tracking else None,
        project_dir=str(Path(args.output_dir) / "logs"),
        dataloader_config=DataLoaderConfiguration(
            use_seedable_sampler=True, dispatch_batches=False if args.streaming else None
        ),
    )
    # Every check that can refuse the run happens on every process before anything is written: the output folder
    # stays as it was until the data, tokenizer and model have all been accepted.
    check_launch(accelerator)
    if args.precision_note:
        accelerator.print(f"Precision: {args.precision_note}.")
    resume_from = resolve_resume(args)
    check_output_dir(args)
    accelerator.wait_for_everyone()
    set_seed(args.seed)

    raw = training_data.load_raw_datasets(args, task)
    tokenizer = load_or_train_tokenizer(args, task, raw, accelerator, resume_from)
    start = starting_config(args)
    refuse_architecture_changes(args, start)
    match_segment_inputs(tokenizer, start)
    data = task.prepare(args, raw, tokenizer, accelerator, start)
    model = task.training_model(build_model(args, task, tokenizer, data), args, tokenizer, data)
    exported_config = apply_config(model.config, task.training_overrides(model.config))
    train_loader, eval_loader = data_loaders(args, data)
    optimizer = torch.optim.AdamW(
        parameter_groups(model, args.weight_decay),
        lr=args.learning_rate,
        betas=(args.adam_beta1, args.adam_beta2),
        eps=args.adam_epsilon,
    )
    model, optimizer, train_loader, eval_loader = accelerator.prepare(model, optimizer, train_loader, eval_loader)
    max_steps, num_epochs = planned_steps(args, train_loader)
    # Not prepared: a prepared scheduler steps once per process per optimizer step. Saved with the checkpoints.
    scheduler = get_scheduler(
        args.lr_scheduler_type, optimizer=optimizer, num_warmup_steps=args.num_warmup_steps, num_training_steps=max_steps
    )
    accelerator.register_for_checkpointing(scheduler)

    # Every check has passed: from here on the run writes to its output folder.
    if accelerator.is_main_process:
        tokenizer.save_pretrained(args.output_dir)  # a resumed run reads it back
    settings = run_settings(args, accelerator, max_steps)
    if args.with_tracking:
        accelerator.init_trackers("transformer_encoder", {k: v for k, v in settings.items() if v is not None})
    log = MetricsLog(accelerator, Path(args.output_dir) / "metrics.jsonl")
    position = Position()
    if resume_from is not None:
        accelerator.load_state(str(resume_from))
        position = Position(**load_state(resume_from))
        accelerator.print(f"Resumed from {resume_from} at step {position.step} (epoch {position.epoch}, "
                          f"batch {position.batches_in_epoch}).")

    loop = Loop(accelerator, args, task, data, model, optimizer, scheduler, eval_loader, log, max_steps)
    started = time.time()
    # A stream is read again (reshuffled) until max_train_steps; a dataset for num_train_epochs.
    epochs = itertools.count(position.epoch) if args.streaming else range(position.epoch, num_epochs)
    with Interruption() as interruption, loop.progress(position):
        for epoch in epochs:
            if position.step >= max_steps:
                break
            position = loop.epoch(train_loader, replace(position, epoch=epoch), interruption, argv)
            if position.step < max_steps:
                position = Position(position.step, epoch + 1, 0)
                if args.checkpointing_steps == "epoch":
                    loop.checkpoint(position)

    metrics = task.evaluate(accelerator, model, eval_loader, data) if eval_loader is not None else {}
    metrics["train_runtime_s"] = round(time.time() - started, 1)
    metrics["train_steps"] = position.step
    log.write(position.step, metrics)
    apply_config(accelerator.unwrap_model(model).config, exported_config)
    export(accelerator, model, tokenizer, args, task, data, metrics, settings)
    if args.with_tracking:
        accelerator.end_training()
    return metrics


@dataclass(frozen=True)
class Position:
    """How far a run has come: what a checkpoint records (`trainer_state.json`) and a resumed run starts from."""

    step: int = 0
    epoch: int = 0
    batches_in_epoch: int = 0  # batches of `epoch` already trained on


def data_loaders(args, data) -> tuple[DataLoader, DataLoader | None]:
    """Loaders draw their seeds from their own generator, not the global RNG that dropout uses: a resumed run then
    continues from the checkpoint's RNG state exactly as the uninterrupted run did."""
    train_loader = DataLoader(
        data.train,
        shuffle=not args.streaming,
        collate_fn=data.collator,
        batch_size=args.per_device_train_batch_size,
        generator=torch.Generator().manual_seed(args.seed),
    )
    if data.validation is None:
        return train_loader, None
    return train_loader, DataLoader(
        data.validation,
        collate_fn=data.eval_collator,
        batch_size=args.per_device_eval_batch_size,
        generator=torch.Generator().manual_seed(args.seed),
    )


def planned_steps(args, train_loader) -> tuple[int, int | None]:
    """The optimizer steps of the run, and its epochs (None for a stream, read until the steps are done)."""
    if args.streaming:
        return args.max_train_steps, None
    steps_per_epoch = len(train_loader) // args.gradient_accumulation_steps
    if steps_per_epoch == 0:
        raise UsageError(
            f"Too little training data for one optimizer step: {len(train_loader)} batches per process, with "
            f"--gradient_accumulation_steps={args.gradient_accumulation_steps}."
        )
    max_steps = args.max_train_steps or args.num_train_epochs * steps_per_epoch
    return max_steps, math.ceil(max_steps / steps_per_epoch)


class Loop:
    """The training loop's steps: train an epoch, and after each optimizer step log, evaluate, checkpoint, and
    stop cleanly on Ctrl-C."""

    def __init__(self, accelerator, args, task, data, model, optimizer, scheduler, eval_loader, log, max_steps):
        self.accelerator, self.args, self.task, self.data = accelerator, args, task, data
        self.model, self.optimizer, self.scheduler, self.eval_loader = model, optimizer, scheduler, eval_loader
        self.log, self.max_steps = log, max_steps
        self.bar = None

    @contextlib.contextmanager
    def progress(self, position: Position):
        self.bar = tqdm(total=self.max_steps, initial=position.step, desc="training",
                        disable=not self.accelerator.is_local_main_process)
        try:
            yield
        finally:
            self.bar.close()

    def epoch(self, train_loader, position: Position, interruption, argv) -> Position:
        """Optimizer steps through the rest of `position.epoch`, or until the run's last step."""
        self.model.train()
        for seeded in (train_loader, self.data.collator):  # shuffling and masking differ from epoch to epoch
            if hasattr(seeded, "set_epoch"):
                seeded.set_epoch(position.epoch)
        whole_epoch = position.batches_in_epoch == 0
        batches = train_loader if whole_epoch else self.accelerator.skip_first_batches(
            train_loader, position.batches_in_epoch)
        steps_before = position.step
        for window in accumulation_windows(batches, self.args.gradient_accumulation_steps):
            loss = train_step(self.accelerator, self.model, self.optimizer, self.scheduler, self.task, window,
                              self.args.max_grad_norm)
            position = replace(position, step=position.step + 1,
                               batches_in_epoch=position.batches_in_epoch + len(window))
            self.bar.update(1)
            self.after_step(position, loss)
            if interruption.stop(self.accelerator):
                self.save_and_exit(position, argv)
            if position.step >= self.max_steps:
                break
        if whole_epoch and position.step == steps_before:
            raise UsageError("The training data ran out before a single optimizer step: add data or lower the batch size.")
        return position

    def after_step(self, position: Position, loss: float):
        """Log every --logging_steps (and at the last step), evaluate every --eval_steps, checkpoint every
        --checkpointing_steps."""
        step, args = position.step, self.args
        if step % args.logging_steps == 0 or step == self.max_steps:
            lr = self.scheduler.get_last_lr()[0]
            self.bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}")
            self.log.write(step, {"loss": loss, "learning_rate": lr, "epoch": position.epoch})
        if args.eval_steps and step % args.eval_steps == 0 and self.eval_loader is not None:
            self.log.write(step, self.task.evaluate(self.accelerator, self.model, self.eval_loader, self.data))
            self.model.train()
        if args.checkpointing_steps not in (None, "epoch") and step % int(args.checkpointing_steps) == 0:
            self.checkpoint(position)

    def checkpoint(self, position: Position) -> Path:
        return save_checkpoint(self.accelerator, self.args.output_dir, position.step, asdict(position),
                               self.args.checkpoints_total_limit)

    def save_and_exit(self, position: Position, argv: list[str] | None):
        """After Ctrl-C: a checkpoint of the position reached, the command that resumes from it, exit code 130."""
        self.bar.close()
        saved = self.checkpoint(position)
        command = resume_command(argv or [], self.accelerator.num_processes)
        self.accelerator.print(f"\nInterrupted at step {position.step}: saved {saved}. Resume with:\n  {command}",
                               file=sys.stderr)
        sys.exit(130)


def apply_config(config, values: dict) -> dict:
    """Set config values; return the ones they replaced, to put back."""
    previous = {name: getattr(config, name) for name in values}
    for name, value in values.items():
        setattr(config, name, value)
    return previous


# ---------------------------------------------------------------------------------------------------------------------
# Options
# ---------------------------------------------------------------------------------------------------------------------


def run_settings(args, accelerator, max_steps) -> dict:
    settings = {k: v for k, v in vars(args).items() if k != "hub_token"}
    settings.update(
        num_processes=accelerator.num_processes,
        distributed_type=str(accelerator.distributed_type),
        mixed_precision=accelerator.mixed_precision,
        total_train_batch_size=args.per_device_train_batch_size
        * accelerator.num_processes
        * args.gradient_accumulation_steps,
        max_train_steps=max_steps,
        device=str(accelerator.device),
    )
    return settings


# ---------------------------------------------------------------------------------------------------------------------
# Tokenizer, data, model
# ---------------------------------------------------------------------------------------------------------------------


def load_or_train_tokenizer(args, task, raw, accelerator, resume_from):
    """The tokenizer of the checkpoint (or --tokenizer_name); else, pretraining from scratch, one trained on the
    training text. It is written to the output folder only once the run has passed every check."""
    name = args.tokenizer_name or args.model_name_or_path
    if name is None and resume_from is not None and (Path(args.output_dir) / "tokenizer.json").exists():
        name = args.output_dir  # the one this run trained before it was interrupted
    if name is not None:
        try:
            return AutoTokenizer.from_pretrained(name)
        except Exception as error:
            raise UsageError(f"Could not load a tokenizer from {name}: {error}") from error

    text_column = training_data.pick_column(raw["train"], args.text_column_name, task.text_columns, "--text_column_name")
    files = None
    if accelerator.is_main_process:
        trained = train_tokenizer(raw["train"], text_column, args.tokenizer_type, args.vocab_size, args.max_seq_length)
        with tempfile.TemporaryDirectory() as folder:
            trained.save_pretrained(folder)
            files = {path.name: path.read_bytes() for path in Path(folder).iterdir()}
    # Trained once, on the main process: the others take its files (the bytes they would train, without the work).
    files = broadcast_object_list([files])[0]
    with tempfile.TemporaryDirectory() as folder:
        for file_name, content in files.items():
            (Path(folder) / file_name).write_bytes(content)
        return AutoTokenizer.from_pretrained(folder)


def match_segment_inputs(tokenizer, config):
    """The tokenizer gives token_type_ids exactly when the model has segment embeddings for a pair's two texts:
    pairs then reach the model as BERT's `[CLS] a [SEP] b [SEP]` with segments 0 and 1, in training and in
    `pipeline(...)` on the saved folder, and never as segment ids a model without them would refuse."""
    segments = getattr(config, "type_vocab_size", 0) >= 2
    names = [name for name in tokenizer.model_input_names if name != "token_type_ids"]
    if segments:
        names.insert(1, "token_type_ids")
    tokenizer.model_input_names = tokenizer.init_kwargs["model_input_names"] = names  # saved with the tokenizer


def given_model_options(args) -> dict:
    """The model options (MODEL_OPTIONS) set on the command line, by name."""
    return {name: getattr(args, name) for name in MODEL_OPTIONS if getattr(args, name) is not None}


def build_model(args, task, tokenizer, data):
    head_kwargs = task.model_kwargs(data)
    overrides = given_model_options(args)
    if args.model_name_or_path:
        try:
            model = task.auto_class.from_pretrained(
                args.model_name_or_path,
                attn_implementation=args.attn_implementation,
                ignore_mismatched_sizes=args.ignore_mismatched_sizes,
                **overrides,  # new dropout rates; any other option matches the checkpoint (refuse_architecture_changes)
                **head_kwargs,
            )
        except Exception as error:
            raise UsageError(f"Could not load the model {args.model_name_or_path}: {error}") from error
    else:
        if args.config_name:
            config = AutoConfig.from_pretrained(args.config_name, **overrides, **head_kwargs)
        else:
            overrides.setdefault("max_position_embeddings", max(512, args.max_seq_length))
            config = TransformerEncoderConfig(
                vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, **overrides, **head_kwargs
            )
        model = task.auto_class.from_config(config, attn_implementation=args.attn_implementation)
    config = model.config
    if getattr(config, "position_embedding_type", None) == "learned" and args.max_seq_length > config.learned_positions:
        raise UsageError(
            f"--max_seq_length={args.max_seq_length} is longer than the model's {config.learned_positions} learned "
            "positions: lower it."
        )
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(len(tokenizer))
    return model


def refuse_architecture_changes(args, config):
    """A checkpoint's weights fix its architecture: an option that would change it (--hidden_size, --norm_first, …)
    is refused rather than ignored. Dropout rates are training settings, and do apply. `config`: the starting
    checkpoint's (`starting_config`)."""
    if not args.model_name_or_path:  # from scratch, or from --config_name: the options set the architecture
        return
    for name, value in given_model_options(args).items():
        theirs = getattr(config, name, None)
        if name not in DROPOUT_OPTIONS and value != theirs:
            raise UsageError(
                f"--{name} {value}: the model comes from {args.model_name_or_path}, whose {name} is {theirs}, and a "
                "checkpoint's weights fix its architecture. Leave the option out, or train a model from scratch "
                "(without --model_name_or_path) to choose it."
            )


def parameter_groups(model, weight_decay: float):
    """AdamW groups: no weight decay on biases and layer-norm weights (the usual BERT recipe)."""
    decay, no_decay = [], []
    for parameter in model.parameters():
        if parameter.requires_grad:
            (no_decay if parameter.ndim < 2 else decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


# ---------------------------------------------------------------------------------------------------------------------
# The step
# ---------------------------------------------------------------------------------------------------------------------


def accumulation_windows(batches, size: int):
    """Groups of `size` micro-batches, one optimizer step each; a last, smaller group is dropped."""
    window = []
    for batch in batches:
        window.append(batch)
        if len(window) == size:
            yield window
            window = []


def train_step(accelerator, model, optimizer, scheduler, task, window, max_grad_norm) -> float:
    """One optimizer step over a window of micro-batches: the gradient of the mean loss over the global batch.

    Where the task counts its items (tokens, labels), each micro-batch's summed loss is divided by the items of the
    whole step on all processes (accelerate's recipe for variable-size batches): times the number of processes,
    because DDP averages gradients over processes; a loss of several terms has a count for each (a vector).
    Otherwise each micro-batch's mean loss counts 1/len(window). Gradients are reduced across processes once, on
    the window's last backward pass."""
    counts = [task.loss_items(batch) for batch in window]
    normalisation = {}
    if counts[0] is not None:
        global_items = accelerator.reduce(torch.stack(counts).sum(0).to(accelerator.device).float(), "sum")
        normalisation["num_items_in_batch"] = global_items / accelerator.num_processes
    step_loss = torch.zeros((), device=accelerator.device)
    for i, batch in enumerate(window):
        last = i == len(window) - 1
        with contextlib.nullcontext() if last else accelerator.no_sync(model):
            loss = model(**batch, **normalisation).loss
            if not normalisation:
                loss = loss / len(window)
            accelerator.backward(loss)
        step_loss += loss.detach()
    if max_grad_norm > 0:
        accelerator.clip_grad_norm_(model.parameters(), max_grad_norm)
    optimizer.step()
    optimizer.zero_grad()
    scheduler.step()
    # normalised: N times each process's share of the global mean; else: the mean over each process's own batches
    return (accelerator.reduce(step_loss, "sum") / accelerator.num_processes).item()


# ---------------------------------------------------------------------------------------------------------------------
# Logging, export
# ---------------------------------------------------------------------------------------------------------------------


class MetricsLog:
    """Metrics as JSON lines in the output folder (read by `visualize curves`) and through accelerate's trackers."""

    def __init__(self, accelerator, path: Path):
        self.accelerator = accelerator
        self.path = path

    def write(self, step: int, values: dict):
        values = {k: (round(v, 6) if isinstance(v, float) else v) for k, v in values.items()}
        self.accelerator.log(values, step=step)
        if self.accelerator.is_main_process:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a") as f:
                f.write(json.dumps({"step": step, **values}) + "\n")


def export(accelerator, model, tokenizer, args, task, data, metrics, settings):
    """The final folder: config, weights, code, tokenizer, model card and results; then, if asked, the Hub."""
    accelerator.wait_for_everyone()
    unwrapped = unsharded(accelerator.unwrap_model(model))
    output_dir = Path(args.output_dir)
    unwrapped.save_pretrained(
        output_dir, is_main_process=accelerator.is_main_process, state_dict=accelerator.get_state_dict(model)
    )
    if accelerator.is_main_process:
        tokenizer.save_pretrained(output_dir)
        model_name = args.hub_model_id or output_dir.name
        write_model_card(output_dir / "README.md", task, args, data.columns, metrics, settings, model_name)
        (output_dir / "all_results.json").write_text(json.dumps(metrics, indent=2))
        if args.push_to_hub:
            push_folder(output_dir, args)
    accelerator.wait_for_everyone()


def unsharded(model):
    """FSDP2 turns the model's class X into a subclass FSDPX defined in torch, whose source files save_pretrained
    would copy in place of the model's code: save the gathered weights through a weightless X instead."""
    from torch.distributed.fsdp import FSDPModule

    if not isinstance(model, FSDPModule):
        return model
    own_class = next(c for c in type(model).__mro__ if not issubclass(c, FSDPModule))
    with torch.device("meta"):
        return own_class(model.config)


def push_folder(output_dir: Path, args):
    """Upload the model, tokenizer, code and card; checkpoints and logs stay local."""
    from huggingface_hub import HfApi

    api = HfApi(token=args.hub_token)
    repo_id = api.create_repo(args.hub_model_id or output_dir.name, exist_ok=True).repo_id
    api.upload_folder(
        repo_id=repo_id, folder_path=str(output_dir), ignore_patterns=HUB_IGNORE, commit_message="Upload trained model"
    )
    return repo_id
