"""One training run, top-down: options → accelerator → data → tokenizer → model → optimizer and schedule →
`accelerator.prepare` → loop (forward, backward, step, log, evaluate, checkpoint) → export with a model card.

The same code runs under `python -m`, `accelerate launch` (one CPU, one or many GPUs, several nodes), and
`torchrun`. Three details keep runs exact across those set-ups:
- the loss of a step is normalised by the number of labelled tokens in the whole step (all micro-batches of the
  accumulation, all processes), not by each micro-batch's own count;
- the learning-rate schedule is stepped once per optimizer step (a prepared scheduler would step once per process);
- masking is seeded per block, and resuming skips exactly the batches already seen.
"""

import itertools
import json
import math
import sys
import time
from pathlib import Path

import torch
from accelerate import Accelerator, DataLoaderConfiguration
from accelerate.utils import GradientAccumulationPlugin, set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import (
    AutoConfig,
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoTokenizer,
    DataCollatorForTokenClassification,
    DataCollatorWithPadding,
    get_scheduler,
)

from .. import TransformerEncoderConfig
from . import data as training_data
from .arguments import (
    EMBEDDED_DEFAULT_MODEL,
    EMBEDDED_DEFAULT_TRAINING,
    MODEL_OPTIONS,
    TRAINING_DEFAULTS,
    UsageError,
    parse_args,
)
from .card import write_model_card
from .checkpoints import check_output_dir, load_state, resolve_resume, save_checkpoint
from .launch import check_launch
from .metrics import accuracy, entity_scores
from .tokenizer import train_tokenizer

AUTO_CLASSES = {
    "mlm": AutoModelForMaskedLM,
    "sequence-classification": AutoModelForSequenceClassification,
    "token-classification": AutoModelForTokenClassification,
}
HUB_IGNORE = ["checkpoints/*", "logs/*"]


def main(argv: list[str] | None = None):
    args = parse_args(argv)
    try:
        train(args)
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


def train(args):
    apply_defaults(args)
    accelerator = Accelerator(
        mixed_precision=args.mixed_precision,
        # Windows of exactly N micro-batches: an epoch's last partial window is dropped rather than stepped early.
        gradient_accumulation_plugin=GradientAccumulationPlugin(
            num_steps=args.gradient_accumulation_steps, sync_with_dataloader=False
        ),
        log_with=args.report_to if args.with_tracking else None,
        project_dir=str(Path(args.output_dir) / "logs"),
        dataloader_config=DataLoaderConfiguration(
            use_seedable_sampler=True, dispatch_batches=False if args.streaming else None
        ),
    )
    # Every check that can refuse the run happens on every process before anything is written.
    check_launch(accelerator)
    resume_from = resolve_resume(args)
    check_output_dir(args)
    accelerator.wait_for_everyone()
    set_seed(args.seed)

    raw = training_data.load_raw_datasets(args)
    tokenizer = load_or_train_tokenizer(args, raw, accelerator, resume_from)
    task = prepare_task_data(args, raw, tokenizer, accelerator)
    model = build_model(args, tokenizer, task)
    # Training needs logits at the masked tokens only: the cheaper LM head. The exported config keeps its own value.
    sparse_training = args.task == "mlm" and isinstance(model.config, TransformerEncoderConfig)
    exported_sparse_prediction = sparse_training and model.config.sparse_prediction
    if sparse_training:
        model.config.sparse_prediction = True

    # Loaders draw their seeds from their own generator, not the global RNG that dropout uses: a resumed run then
    # continues from the checkpoint's RNG state exactly as the uninterrupted run did.
    train_loader = DataLoader(
        task["train"],
        shuffle=not args.streaming,
        collate_fn=task["collator"],
        batch_size=args.per_device_train_batch_size,
        generator=torch.Generator().manual_seed(args.seed),
    )
    eval_loader = None
    if task.get("validation") is not None:
        eval_loader = DataLoader(
            task["validation"],
            collate_fn=task["eval_collator"],
            batch_size=args.per_device_eval_batch_size,
            generator=torch.Generator().manual_seed(args.seed),
        )
    optimizer = torch.optim.AdamW(
        parameter_groups(model, args.weight_decay),
        lr=args.learning_rate,
        betas=(args.adam_beta1, args.adam_beta2),
        eps=args.adam_epsilon,
    )
    model, optimizer, train_loader, eval_loader = accelerator.prepare(model, optimizer, train_loader, eval_loader)

    steps_per_epoch = None if args.streaming else len(train_loader) // args.gradient_accumulation_steps
    if steps_per_epoch == 0:
        raise UsageError(
            f"Too little training data for one optimizer step: {len(train_loader)} batches per process, with "
            f"--gradient_accumulation_steps={args.gradient_accumulation_steps}."
        )
    max_steps = args.max_train_steps or args.num_train_epochs * steps_per_epoch
    num_epochs = None if args.streaming else math.ceil(max_steps / steps_per_epoch)
    # Not prepared: a prepared scheduler steps once per process per optimizer step. Saved with the checkpoints.
    scheduler = get_scheduler(
        args.lr_scheduler_type, optimizer=optimizer, num_warmup_steps=args.num_warmup_steps, num_training_steps=max_steps
    )
    accelerator.register_for_checkpointing(scheduler)

    settings = run_settings(args, accelerator, max_steps)
    if args.with_tracking:
        accelerator.init_trackers("transformer_encoder", {k: v for k, v in settings.items() if v is not None})
    log = MetricsLog(accelerator, Path(args.output_dir) / "metrics.jsonl")

    step, first_epoch, batches_done = 0, 0, 0
    if resume_from is not None:
        accelerator.load_state(str(resume_from))
        position = load_state(resume_from)
        step, first_epoch, batches_done = position["step"], position["epoch"], position["batches_in_epoch"]
        accelerator.print(f"Resumed from {resume_from} at step {step} (epoch {first_epoch}, batch {batches_done}).")

    progress = tqdm(total=max_steps, initial=step, disable=not accelerator.is_local_main_process, desc="training")
    started = time.time()
    # A stream is read again (reshuffled) until max_train_steps; a dataset for num_train_epochs.
    epochs = itertools.count(first_epoch) if args.streaming else range(first_epoch, num_epochs)
    for epoch in epochs:
        if step >= max_steps:
            break
        model.train()
        if isinstance(task["collator"], training_data.SeededMaskingCollator):
            task["collator"].epoch = epoch
        if hasattr(train_loader, "set_epoch"):
            train_loader.set_epoch(epoch)
        whole_epoch = batches_done == 0
        batches = train_loader if whole_epoch else accelerator.skip_first_batches(train_loader, batches_done)
        steps_before = step
        for window in accumulation_windows(batches, args.gradient_accumulation_steps):
            loss = train_step(accelerator, model, optimizer, scheduler, window, args.max_grad_norm)
            step += 1
            batches_done += len(window)
            progress.update(1)
            if step % args.logging_steps == 0 or step == max_steps:
                lr = scheduler.get_last_lr()[0]
                progress.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}")
                log.write(step, {"loss": loss, "learning_rate": lr, "epoch": epoch})
            if args.eval_steps and step % args.eval_steps == 0 and eval_loader is not None:
                log.write(step, evaluate(accelerator, model, eval_loader, task))
                model.train()
            if args.checkpointing_steps not in (None, "epoch") and step % int(args.checkpointing_steps) == 0:
                position = {"step": step, "epoch": epoch, "batches_in_epoch": batches_done}
                save_checkpoint(accelerator, args.output_dir, step, position, args.checkpoints_total_limit)
            if step >= max_steps:
                break
        if whole_epoch and step == steps_before:
            raise UsageError("The training data ran out before a single optimizer step: add data or lower the batch size.")
        if step < max_steps:
            batches_done = 0
            if args.checkpointing_steps == "epoch":
                position = {"step": step, "epoch": epoch + 1, "batches_in_epoch": 0}
                save_checkpoint(accelerator, args.output_dir, step, position, args.checkpoints_total_limit)
    progress.close()

    metrics = evaluate(accelerator, model, eval_loader, task) if eval_loader is not None else {}
    metrics["train_runtime_s"] = round(time.time() - started, 1)
    metrics["train_steps"] = step
    log.write(step, metrics)
    if sparse_training:
        accelerator.unwrap_model(model).config.sparse_prediction = exported_sparse_prediction
    export(accelerator, model, tokenizer, args, metrics, settings)
    if args.with_tracking:
        accelerator.end_training()
    return metrics


# ---------------------------------------------------------------------------------------------------------------------
# Options
# ---------------------------------------------------------------------------------------------------------------------


def apply_defaults(args):
    """Options that depend on others, and the checks argparse cannot make."""
    if not args.output_dir:
        raise UsageError("--output_dir is required: it receives checkpoints and the trained model.")
    embedded = args.task == "mlm" and not (args.dataset_name or args.train_file) and not args.model_name_or_path
    if embedded:  # the built-in corpus trains a small model in minutes on a CPU, unless told otherwise
        for name, value in EMBEDDED_DEFAULT_MODEL.items():
            if getattr(args, name) is None:
                setattr(args, name, value)
    for name, value in (EMBEDDED_DEFAULT_TRAINING if embedded else TRAINING_DEFAULTS).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.dataset_label = training_data.EMBEDDED_CORPUS if embedded else (args.dataset_name or args.train_file)
    if args.streaming and not args.max_train_steps:
        raise UsageError("--streaming reads data of unknown length: give --max_train_steps.")
    if args.streaming and args.task != "mlm":
        raise UsageError("--streaming is for mlm pretraining corpora; fine-tuning data is read whole.")
    if args.checkpointing_steps not in (None, "epoch") and not str(args.checkpointing_steps).isdigit():
        raise UsageError(f"--checkpointing_steps takes a number of steps or 'epoch', got {args.checkpointing_steps!r}.")
    for name in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps",
                 "max_seq_length", "logging_steps"):
        if getattr(args, name) <= 0:
            raise UsageError(f"--{name} must be positive, got {getattr(args, name)}.")
    if args.max_seq_length < 8:
        raise UsageError(f"--max_seq_length={args.max_seq_length} is too short to hold any text.")
    if args.task != "mlm" and not (args.model_name_or_path or args.tokenizer_name):
        raise UsageError(f"{args.task} fine-tunes a model: give --model_name_or_path (or at least --tokenizer_name).")


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


def load_or_train_tokenizer(args, raw, accelerator, resume_from):
    name = args.tokenizer_name or args.model_name_or_path
    if name is None and resume_from is not None and (Path(args.output_dir) / "tokenizer.json").exists():
        name = args.output_dir  # the one this run trained before it was interrupted
    if name is not None:
        try:
            return AutoTokenizer.from_pretrained(name)
        except Exception as error:
            raise UsageError(f"Could not load a tokenizer from {name}: {error}") from error

    text_column = training_data.pick_column(
        raw["train"], args.text_column_name, training_data.DEFAULT_TEXT_COLUMNS["mlm"], "text"
    )
    folder = Path(args.output_dir)
    if accelerator.is_main_process:
        tokenizer = train_tokenizer(
            raw["train"], text_column, args.tokenizer_type, args.vocab_size, args.max_seq_length
        )
        tokenizer.save_pretrained(folder)
    accelerator.wait_for_everyone()
    return AutoTokenizer.from_pretrained(folder)


def prepare_task_data(args, raw, tokenizer, accelerator) -> dict:
    """The tokenized splits, the collators that batch them, and (fine-tuning) the label names."""
    task = {"task": args.task, "labels": None}
    train = raw["train"]
    text_column = training_data.pick_column(train, args.text_column_name, training_data.DEFAULT_TEXT_COLUMNS[args.task], "text")
    if args.task == "mlm":
        packed = training_data.pack_for_mlm(raw, tokenizer, text_column, args, accelerator.main_process_first)
        task.update(packed)
        task["collator"] = training_data.SeededMaskingCollator(tokenizer, args.mlm_probability, args.seed)
        # Evaluation masks the same tokens every time, so that eval losses are comparable across steps.
        task["eval_collator"] = training_data.SeededMaskingCollator(tokenizer, args.mlm_probability, args.seed + 1)
        return task

    per_token = args.task == "token-classification"
    label_column = training_data.pick_column(train, args.label_column_name, training_data.DEFAULT_LABEL_COLUMNS[args.task], "label")
    for split in raw:
        training_data.pick_column(raw[split], text_column, (), "text")
        training_data.pick_column(raw[split], label_column, (), "label")
    mapping = training_data.label_mapping(train, label_column, per_token)
    if mapping is None and per_token:
        raise UsageError(f"Token labels in {label_column!r} must be tags or class ids, not real numbers.")
    names, value_to_id = mapping if mapping else (None, None)
    names, value_to_id = match_checkpoint_labels(args, names, value_to_id)
    task["labels"] = names
    encode = training_data.encode_for_token_classification if per_token else training_data.encode_for_sequence_classification
    with accelerator.main_process_first():
        for split in raw:
            task[split] = encode(raw[split], tokenizer, text_column, label_column, value_to_id, args)
    pad_to = 8 if accelerator.mixed_precision != "no" else None
    collator_class = DataCollatorForTokenClassification if per_token else DataCollatorWithPadding
    task["collator"] = task["eval_collator"] = collator_class(tokenizer, pad_to_multiple_of=pad_to)
    return task


def match_checkpoint_labels(args, names, value_to_id):
    """A checkpoint already fine-tuned for this task keeps its label ids; a different label set is an error
    (unless --ignore_mismatched_sizes re-initialises the head)."""
    if names is None or not args.model_name_or_path:
        return names, value_to_id
    try:
        config = AutoConfig.from_pretrained(args.model_name_or_path)
    except Exception as error:
        raise UsageError(f"Could not load the checkpoint {args.model_name_or_path}: {error}") from error
    fine_tuned = any(a.endswith(AUTO_CLASSES[args.task].__name__.removeprefix("AutoModel")) for a in config.architectures or [])
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


def build_model(args, tokenizer, task):
    auto_class = AUTO_CLASSES[args.task]
    labels = task["labels"]
    head_kwargs = {}
    if args.task != "mlm":
        if labels is None:
            head_kwargs = {"num_labels": 1, "problem_type": "regression"}
        else:
            head_kwargs = {"id2label": dict(enumerate(labels)), "label2id": {n: i for i, n in enumerate(labels)}}
    if args.model_name_or_path:
        try:
            model = auto_class.from_pretrained(
                args.model_name_or_path,
                attn_implementation=args.attn_implementation,
                ignore_mismatched_sizes=args.ignore_mismatched_sizes,
                **head_kwargs,
            )
        except Exception as error:
            raise UsageError(f"Could not load the model {args.model_name_or_path}: {error}") from error
    else:
        overrides = {name: getattr(args, name) for name in MODEL_OPTIONS if getattr(args, name) is not None}
        if args.config_name:
            config = AutoConfig.from_pretrained(args.config_name, **overrides, **head_kwargs)
        else:
            overrides.setdefault("max_position_embeddings", max(512, args.max_seq_length))
            config = TransformerEncoderConfig(
                vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, **overrides, **head_kwargs
            )
        model = auto_class.from_config(config, attn_implementation=args.attn_implementation)
    config = model.config
    if getattr(config, "position_embedding_type", None) == "learned" and args.max_seq_length > config.learned_positions:
        raise UsageError(
            f"--max_seq_length={args.max_seq_length} is longer than the model's {config.learned_positions} learned "
            "positions: lower it."
        )
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(len(tokenizer))
    return model


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


def train_step(accelerator, model, optimizer, scheduler, window, max_grad_norm) -> float:
    """One optimizer step over a window of micro-batches. Each micro-batch's summed loss is divided by the labelled
    items of the whole step across processes, so the gradient is that of the mean over the global batch."""
    normalisation = {}  # regression (float labels) keeps the mean loss of each micro-batch
    if window[0]["labels"].dtype == torch.long:
        local_items = sum((batch["labels"] != -100).sum() for batch in window)
        global_items = accelerator.reduce(local_items.to(accelerator.device).float(), "sum")
        # backward() divides by the accumulation steps and DDP averages over processes: scale back up.
        normalisation["num_items_in_batch"] = global_items / (
            accelerator.num_processes * accelerator.gradient_accumulation_steps
        )
    step_loss = torch.zeros((), device=accelerator.device)
    for batch in window:
        with accelerator.accumulate(model):
            loss = model(**batch, **normalisation).loss
            accelerator.backward(loss)
            step_loss += loss.detach() / accelerator.gradient_accumulation_steps
            if accelerator.sync_gradients and max_grad_norm > 0:
                accelerator.clip_grad_norm_(model.parameters(), max_grad_norm)
            optimizer.step()
            optimizer.zero_grad()
    scheduler.step()
    return (accelerator.reduce(step_loss, "sum") / accelerator.num_processes).item()


# ---------------------------------------------------------------------------------------------------------------------
# Evaluation, logging, export
# ---------------------------------------------------------------------------------------------------------------------


@torch.no_grad()
def evaluate(accelerator, model, loader, task) -> dict:
    model.eval()
    labels = task["labels"]
    if task["task"] == "mlm":
        loss_sum, items = torch.zeros((), device=accelerator.device), torch.zeros((), device=accelerator.device)
        for batch in loader:
            n = (batch["labels"] != -100).sum()
            loss_sum += model(**batch, num_items_in_batch=1).loss.float()  # summed over the masked tokens
            items += n
        loss_sum, items = accelerator.reduce(loss_sum, "sum"), accelerator.reduce(items.float(), "sum")
        eval_loss = (loss_sum / items.clamp(min=1)).item()
        return {"eval_loss": eval_loss, "perplexity": math.exp(min(eval_loss, 50))}

    predictions, references, losses = [], [], []
    for batch in loader:
        outputs = model(**batch)
        losses.append(accelerator.gather_for_metrics(outputs.loss.detach().repeat(len(batch["labels"]))))
        if labels is None:  # regression
            continue
        predicted = outputs.logits.argmax(-1)
        gold = batch["labels"]
        if predicted.ndim == 2:  # token classification: sequences differ in length across processes
            predicted = accelerator.pad_across_processes(predicted, dim=1, pad_index=-100)
            gold = accelerator.pad_across_processes(gold, dim=1, pad_index=-100)
        predicted, gold = accelerator.gather_for_metrics((predicted, gold))
        predictions += predicted.tolist()
        references += gold.tolist()
    metrics = {"eval_loss": torch.cat(losses).mean().item()}
    if labels is None:
        return metrics
    if isinstance(references[0], list):
        pairs = [[(labels[p], labels[g]) for p, g in zip(ps, gs) if g != -100] for ps, gs in zip(predictions, references)]
        scores = entity_scores([[p for p, _ in row] for row in pairs], [[g for _, g in row] for row in pairs])
        metrics.update(scores)
    else:
        metrics["accuracy"] = accuracy(predictions, references)
    return metrics


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


def export(accelerator, model, tokenizer, args, metrics, settings):
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
        write_model_card(output_dir / "README.md", args, args.dataset_label, metrics, settings, model_name)
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
