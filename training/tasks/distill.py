"""Knowledge distillation (Hinton et al. 2015): a small student learns a fine-tuned teacher's outputs.

For classification, the student matches the teacher's distribution softened by a temperature T, and the labels:

    loss = α · T² · KL(softmax(z_t / T) ‖ softmax(z_s / T)) + (1 − α) · CE(z_s, y)

(T² keeps the soft term's gradient on the scale of the hard one as T changes.) For regression, the student's
score matches the teacher's and the label: α · (s − t)² + (1 − α) · (s − y)². Rows without a label (from
--unlabeled_file or --augment_copies) count in the first term only.

The transfer set, the rows the teacher labels, is the training data, plus unlabelled text, plus perturbed copies
of the training texts (Tang et al. 2019: words masked, n-grams sampled). The teacher labels it once, before
training, in bf16 where the CPU computes it natively, each process a share: with a cache the teacher's forward
passes are paid once, not once per epoch. Student and teacher read the same tokens: the student uses the teacher's
tokenizer. The student is the teacher's architecture at the size the model options give (random weights), a
checkpoint (--model_name_or_path), or cut from the teacher's own weights (--student_init teacher,
`student_init.py`).
"""

import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from accelerate.utils import gather_object
from datasets import Dataset, concatenate_datasets, load_dataset
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import AutoModelForSequenceClassification, AutoTokenizer
from transformers.utils import ModelOutput

from ...cpu import cpu_computes_bf16
from ..data import FILE_BUILDERS, pick_column
from ..errors import UsageError
from ..metrics import accuracy, regression_scores
from ..option_types import closed_unit_interval, non_negative_int, positive_float
from ..student_init import init_from_teacher, stream_projection
from .base import load_config
from .sequence_classification import SequenceClassification, tokenize_texts

# Tang et al. 2019, "Distilling task-specific knowledge from BERT into simple neural networks", section 3.3.
MASK_PROBABILITY = 0.1  # each word becomes the mask token
NGRAM_PROBABILITY = 0.25  # the copy becomes one of its own n-grams, n from 1 to 5
PROJECTION_SAMPLE = 256  # training rows whose teacher hidden states give the student's projected width


def distillation_loss(student_logits, teacher_logits, labels, temperature: float, alpha: float, counts=None):
    """(loss, soft term, hard term). `counts` = (rows, labelled rows) that the summed terms are divided by: the
    whole step's, across micro-batches and processes, in training; this batch's where None. Labels of -100
    (classification) or NaN (regression) mark rows without one."""
    regression = student_logits.shape[-1] == 1
    if regression:
        s, t, y = student_logits.squeeze(-1).float(), teacher_logits.squeeze(-1).float(), labels.float()
        labelled = ~torch.isnan(y)
        soft = (s - t).pow(2).sum()
        hard = (s[labelled] - y[labelled]).pow(2).sum()
    else:
        labelled = labels != -100
        log_p_s = F.log_softmax(student_logits.float() / temperature, -1)
        log_p_t = F.log_softmax(teacher_logits.float() / temperature, -1)
        soft = temperature**2 * F.kl_div(log_p_s, log_p_t, log_target=True, reduction="sum")
        hard = F.cross_entropy(student_logits.float()[labelled], labels[labelled], reduction="sum")
    rows, labelled_rows = counts if counts is not None else (len(labels), labelled.sum())
    soft, hard = soft / rows, hard / torch.clamp(torch.as_tensor(labelled_rows, dtype=torch.float), min=1e-6)
    return alpha * soft + (1 - alpha) * hard, soft, hard


@dataclass
class DistillationOutput(ModelOutput):
    loss: torch.Tensor | None = None  # α · soft + (1 − α) · hard
    logits: torch.Tensor | None = None  # the student's
    soft_loss: torch.Tensor | None = None
    hard_loss: torch.Tensor | None = None


class StudentWithTeacherTargets(nn.Module):
    """The student, trained on the teacher's logits (a column of the batch); saved as the student alone."""

    def __init__(self, student, temperature: float, alpha: float):
        super().__init__()
        self.student = student
        self.temperature = temperature
        self.alpha = alpha

    @property
    def config(self):
        return self.student.config

    def forward(self, input_ids, teacher_logits, labels, attention_mask=None, token_type_ids=None,
                num_items_in_batch=None):
        inputs = {"attention_mask": attention_mask, "token_type_ids": token_type_ids}
        logits = self.student(input_ids, **{k: v for k, v in inputs.items() if v is not None}).logits
        counts = num_items_in_batch.unbind() if num_items_in_batch is not None else None
        loss, soft, hard = distillation_loss(logits, teacher_logits, labels, self.temperature, self.alpha, counts)
        return DistillationOutput(loss=loss, logits=logits, soft_loss=soft, hard_loss=hard)

    def save_pretrained(self, save_directory, is_main_process: bool = True, state_dict: dict | None = None):
        state_dict = self.state_dict() if state_dict is None else state_dict
        own = {k.removeprefix("student."): v for k, v in state_dict.items() if k.startswith("student.")}
        self.student.save_pretrained(save_directory, is_main_process=is_main_process, state_dict=own)


class Distillation(SequenceClassification):
    name = "distill"
    title = "Text classification distilled from a teacher"
    card_metrics = ("accuracy", "spearmanr", "pearson", "mse", "teacher_accuracy", "teacher_spearmanr")

    def add_arguments(self, group):  # --text_pair_column_name is sequence-classification's option, shared
        group.add_argument("--teacher_name_or_path", help="the fine-tuned sequence-classification model to learn from")
        group.add_argument(
            "--temperature", type=positive_float, default=2.0, help="T: the softmax temperature of the soft targets"
        )
        group.add_argument(
            "--alpha", type=closed_unit_interval, default=0.5,
            help="weight of the teacher's targets; 1 − alpha weighs the labels",
        )
        group.add_argument(
            "--student_init", choices=("random", "teacher"), default="random",
            help="random weights, or cut from the teacher's (evenly spaced layers, the width projected)",
        )
        group.add_argument(
            "--unlabeled_file", help="more text for the teacher to label: the training file's text column(s), no label"
        )
        group.add_argument(
            "--augment_copies", type=non_negative_int, default=0,
            help="perturbed copies of each training text for the teacher to label (words masked, n-grams sampled)",
        )

    def check_arguments(self, args):
        if not args.teacher_name_or_path:
            raise UsageError("distill needs a teacher: give --teacher_name_or_path (a fine-tuned classifier)")
        teacher = load_config(args.teacher_name_or_path, "teacher")
        if args.student_init == "teacher" and args.model_name_or_path:
            raise UsageError("--student_init teacher cuts the student from the teacher: leave out --model_name_or_path")
        args.tokenizer_name = args.tokenizer_name or args.teacher_name_or_path
        if not args.model_name_or_path:
            args.config_name = args.config_name or args.teacher_name_or_path
            student_size_defaults(args, teacher)

    def match_labels(self, args, start_config, names, value_to_id):
        """The student's label ids are the teacher's: the data's labels must be the teacher's."""
        teacher = load_config(args.teacher_name_or_path, "teacher")
        if not any(a.endswith("ForSequenceClassification") for a in teacher.architectures or []):
            raise UsageError(
                f"The teacher {args.teacher_name_or_path} is not a fine-tuned sequence classifier (its architectures: "
                f"{teacher.architectures}): fine-tune it first (the sequence-classification task)."
            )
        regression = teacher.num_labels == 1
        if names is None or regression:
            if names is None and regression:
                return None, None
            data_kind = "regression scores" if names is None else f"the labels {names}"
            teacher_kind = "a regression score" if regression else f"the labels {list(teacher.id2label.values())}"
            raise UsageError(f"The teacher {args.teacher_name_or_path} predicts {teacher_kind}, the data has {data_kind}.")
        theirs = [teacher.id2label[i] for i in range(teacher.num_labels)]
        if sorted(theirs) != sorted(names):
            raise UsageError(
                f"The teacher {args.teacher_name_or_path} predicts the labels {theirs}, the data has {names}: "
                "distil with a teacher fine-tuned for these labels."
            )
        return theirs, {value: theirs.index(names[i]) for value, i in value_to_id.items()}

    def prepare(self, args, raw, tokenizer, accelerator, start_config):
        teacher = load_teacher(args, tokenizer, accelerator.device)
        data = super().prepare(args, raw, tokenizer, accelerator, start_config)
        segments = {"teacher": teacher.config, "student": start_config or teacher.config}
        segments = {role: getattr(config, "type_vocab_size", 0) >= 2 for role, config in segments.items()}
        if "text_pair" in data.columns and segments["teacher"] != segments["student"]:
            raise UsageError(
                "Teacher and student must read a pair alike: the "
                f"{'teacher' if segments['teacher'] else 'student'} has segment embeddings for a pair's two texts, "
                f"the {'student' if segments['teacher'] else 'teacher'} has none."
            )
        regression = data.labels is None
        extra = []
        if args.unlabeled_file:
            extra.append(self.unlabeled_rows(args, data.columns, tokenizer, regression))
        if args.augment_copies:
            extra.append(self.augmented_rows(args, raw["train"], data.columns, tokenizer, regression))
        train = concatenate_datasets([data.train, *extra]) if extra else data.train
        started = time.time()
        data.train = with_teacher_logits(teacher, train, data.collator, accelerator, args.per_device_eval_batch_size)
        precision = "bf16" if teacher_computes_bf16(accelerator.device) else "fp32"
        accelerator.print(f"Transfer set: {len(data.train)} rows labelled by {args.teacher_name_or_path} in "
                          f"{time.time() - started:.0f} s ({precision}).")
        if data.validation is not None:
            data.validation = with_teacher_logits(
                teacher, data.validation, data.collator, accelerator, args.per_device_eval_batch_size
            )
            scores = validation_scores(data.validation["teacher_logits"], data.validation["labels"], regression)
            data.extras["teacher_metrics"] = {f"teacher_{k}": v for k, v in scores.items()}
        if args.student_init == "teacher":
            sample = data.train.select(range(min(PROJECTION_SAMPLE, len(data.train)))).remove_columns(
                ["labels", "teacher_logits"]
            )
            batches = DataLoader(sample, batch_size=64, collate_fn=data.collator)
            data.extras["teacher"] = teacher
            data.extras["projection_batches"] = batches
        return data

    def training_model(self, model, args, tokenizer, data):
        teacher = data.extras.pop("teacher", None)
        if teacher is not None:
            batches = data.extras.pop("projection_batches")
            init_from_teacher(model, teacher, stream_projection(teacher, batches, model.config.hidden_size))
        return StudentWithTeacherTargets(model, args.temperature, args.alpha)

    def loss_items(self, batch):
        labels = batch["labels"]
        labelled = (labels != -100) if labels.dtype == torch.long else ~torch.isnan(labels)
        return torch.stack([torch.tensor(len(labels), device=labels.device), labelled.sum()])

    def evaluate(self, accelerator, model, loader, data) -> dict:
        return {**super().evaluate(accelerator, model, loader, data), **data.extras.get("teacher_metrics", {})}

    def card_notes(self, args, metrics) -> str:
        teacher = ", ".join(f"{k.removeprefix('teacher_')} {v:.4f}" for k, v in metrics.items() if k.startswith("teacher_"))
        start = "the teacher's own weights" if args.student_init == "teacher" else args.model_name_or_path or "random weights"
        return (
            f"Distilled from the teacher `{args.teacher_name_or_path}` (on the same validation data: {teacher or 'n/a'})"
            f" with temperature {args.temperature} and α {args.alpha}; the student started from {start}."
        )

    def unlabeled_rows(self, args, columns, tokenizer, regression) -> Dataset:
        """--unlabeled_file, read with the training file's text column(s)."""
        path = args.unlabeled_file
        builder = FILE_BUILDERS.get(Path(path).suffix)
        if not Path(path).is_file():
            raise UsageError(f"The --unlabeled_file {path} does not exist.")
        if builder is None:
            raise UsageError(f"Cannot read --unlabeled_file {path}: use one of {', '.join(FILE_BUILDERS)} files.")
        try:
            raw = load_dataset(builder, data_files=path, split="train")
        except Exception as error:
            raise UsageError(f"Could not read --unlabeled_file {path}: {error}") from error
        if builder == "text" and "text_pair" not in columns:
            raw = raw.rename_column("text", columns["text"]) if columns["text"] != "text" else raw
        for role in ("text", "text_pair"):
            if role in columns:
                pick_column(raw, columns[role], (), "--unlabeled_file's " + role.replace("_", " "))
        return encode_unlabelled(raw, columns, tokenizer, args.max_seq_length, regression)

    def augmented_rows(self, args, train, columns, tokenizer, regression) -> Dataset:
        """--augment_copies perturbed copies of every training text, unlabelled: a perturbed text may not keep its
        label, so only the teacher's targets teach on it."""
        roles = [r for r in ("text", "text_pair") if r in columns]

        def perturb(batch, indices):
            out = {columns[r]: [] for r in roles}
            for copy in range(args.augment_copies):
                for row, index in enumerate(indices):
                    rng = random.Random(f"{args.seed}-{copy}-{index}")
                    for r in roles:
                        out[columns[r]].append(perturbed(batch[columns[r]][row], tokenizer.mask_token, rng))
            return out

        texts = train.select_columns([columns[r] for r in roles])
        copies = texts.map(perturb, batched=True, with_indices=True, remove_columns=texts.column_names)
        return encode_unlabelled(copies, columns, tokenizer, args.max_seq_length, regression)


def perturbed(text: str, mask_token: str, rng: random.Random) -> str:
    """Tang et al.'s augmentation without the part-of-speech swap: each word masked with p 0.1; then, with p 0.25,
    the text replaced by one of its n-grams (n from 1 to 5)."""
    words = [mask_token if rng.random() < MASK_PROBABILITY else w for w in text.split()]
    if words and rng.random() < NGRAM_PROBABILITY:
        n = rng.randint(1, min(5, len(words)))
        start = rng.randint(0, len(words) - n)
        words = words[start:start + n]
    return " ".join(words)


def encode_unlabelled(raw, columns, tokenizer, max_length: int, regression: bool) -> Dataset:
    missing = float("nan") if regression else -100

    def encode(batch):
        encoded = tokenize_texts(tokenizer, batch, columns, max_length)
        encoded["labels"] = [missing] * len(batch[columns["text"]])
        return encoded

    return raw.map(encode, batched=True, remove_columns=raw.column_names)


def student_size_defaults(args, teacher):
    """A student from scratch is the teacher's architecture; the size not given follows DistilBERT: half the
    layers; a narrower width keeps the teacher's head size and feed-forward ratio."""
    if args.num_hidden_layers is None:
        args.num_hidden_layers = max(1, teacher.num_hidden_layers // 2)
    if args.hidden_size is not None and args.hidden_size != teacher.hidden_size:
        if args.num_attention_heads is None:
            args.num_attention_heads = max(1, args.hidden_size // teacher.head_dim)
        if args.intermediate_size is None:
            args.intermediate_size = args.hidden_size * teacher.intermediate_size // teacher.hidden_size


def load_teacher(args, tokenizer, device):
    """The teacher in eval mode, on this process's device, after checking it reads the run's tokens."""
    name = args.teacher_name_or_path
    try:
        teacher = AutoModelForSequenceClassification.from_pretrained(name, attn_implementation=args.attn_implementation)
    except Exception as error:
        raise UsageError(f"Could not load the teacher {name}: {error}") from error
    try:
        theirs = AutoTokenizer.from_pretrained(name)
    except Exception as error:
        raise UsageError(f"Could not load the teacher's tokenizer from {name}: {error}") from error
    check_same_vocabulary(tokenizer, "the run's tokenizer", theirs, name)
    student = args.model_name_or_path
    if student and (not Path(student).is_dir() or (Path(student) / "tokenizer_config.json").is_file()):
        try:
            own = AutoTokenizer.from_pretrained(student)
        except Exception as error:
            raise UsageError(f"Could not load the student's tokenizer from {student}: {error}") from error
        check_same_vocabulary(own, f"the student {student}'s tokenizer", theirs, name)
    return teacher.to(device).eval().requires_grad_(False)


def check_same_vocabulary(tokenizer, what: str, teachers, teacher_name: str):
    """Student and teacher must read the same token ids."""
    ours, theirs = tokenizer.get_vocab(), teachers.get_vocab()
    if ours != theirs:
        differing = sorted(set(ours.items()) ^ set(theirs.items()))[:5]
        raise UsageError(
            f"{what[0].upper()}{what[1:]} ({len(ours)} tokens) is not the teacher's ({teacher_name}, {len(theirs)} "
            f"tokens); they differ at {differing}. Student and teacher must read the same tokens: leave out "
            "--tokenizer_name, or start from a student with the teacher's vocabulary."
        )


@torch.no_grad()
def with_teacher_logits(teacher, dataset, collator, accelerator, batch_size: int) -> Dataset:
    """`dataset` with a `teacher_logits` column. Rows of similar length are batched together (little padding to
    compute), the batches dealt out to the processes, and every process gets all the logits: the same batches, and
    so the same numbers, whatever the number of processes."""
    lengths = [len(ids) for ids in dataset["input_ids"]]
    by_length = sorted(range(len(dataset)), key=lengths.__getitem__)
    batches = [by_length[i:i + batch_size] for i in range(0, len(by_length), batch_size)]
    share = batches[accelerator.process_index::accelerator.num_processes]
    inputs = dataset.remove_columns([c for c in dataset.column_names if c == "labels"])
    bf16 = teacher_computes_bf16(accelerator.device)
    logits = {}
    for indices in tqdm(share, desc="teacher", disable=not accelerator.is_local_main_process):
        columns = inputs[indices]
        rows = [dict(zip(columns, values)) for values in zip(*columns.values())]
        batch = {k: v.to(accelerator.device) for k, v in collator(rows).items()}
        with torch.autocast(accelerator.device.type, dtype=torch.bfloat16, enabled=bf16):
            out = teacher(**batch).logits.float().cpu()
        logits.update(zip(indices, out.tolist()))
    gathered = {}
    for part in gather_object([logits]):
        gathered.update(part)
    return dataset.add_column("teacher_logits", [gathered[i] for i in range(len(dataset))])


def teacher_computes_bf16(device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and cpu_computes_bf16()


def validation_scores(teacher_logits, labels, regression: bool) -> dict:
    if regression:
        return regression_scores([row[0] for row in teacher_logits], labels)
    return {"accuracy": accuracy([max(range(len(row)), key=row.__getitem__) for row in teacher_logits], labels)}


TASK = Distillation()
