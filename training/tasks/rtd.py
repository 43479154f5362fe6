"""Replaced-token detection (ELECTRA, Clark et al. 2020): a small masked-LM generator fills the masked tokens with
its own samples, and the encoder, the discriminator, learns to tell at every token whether it was replaced:

    loss = L_MLM(generator) + λ · L_RTD(discriminator),   λ = 50 as in the paper (--rtd_weight)

The discriminator learns from every token, not only the masked 15 %. Data, packing and seeded masking are masked
LM's (`mlm.py`); the masked tokens become [MASK] 85 % of the time and stay as they are otherwise, as in ELECTRA.
The discriminator is the checkpoint of the run (every head loads it, as it loads a masked LM's); the generator,
a masked-LM checkpoint, is saved beside it in `generator/`, for continued pretraining.
"""

import copy
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import PartialState
from torch import nn
from transformers import AutoModelForMaskedLM, AutoModelForPreTraining
from transformers.utils import ModelOutput

from ... import TransformerEncoderForPreTraining
from ..errors import UsageError
from ..option_types import fraction, positive_float
from .mlm import MaskedLanguageModeling, SeededMaskingCollator

GENERATOR_FOLDER = "generator"
# ELECTRA's masking: of the masked tokens, 85 % become [MASK] and 15 % stay the original; none becomes a random
# token, since the generator's samples are the replacements.
ELECTRA_MASKING = {"mask_replace_prob": 0.85, "random_replace_prob": 0.0}


class ReplacedTokenDetection(MaskedLanguageModeling):
    """Masked LM's data (text packed into blocks, masking seeded per block) and a generator-discriminator pair."""

    name = "rtd"
    auto_class = AutoModelForPreTraining
    pipeline_tag = None  # transformers has no pipeline for a discriminator; the encoder is for fine-tuning
    title = "Replaced-token detection"
    metric = "rtd_accuracy"
    card_metrics = ("rtd_accuracy", "rtd_f1", "generator_perplexity")

    def add_arguments(self, group):  # --mlm_probability is masked LM's option, shared
        group.add_argument(
            "--generator_size",
            type=fraction,
            default=0.25,
            help="the generator's share of the discriminator's layers and feed-forward width (its width and "
            "embeddings are the discriminator's); the share of tokens masked is --mlm_probability",
        )
        group.add_argument(
            "--rtd_weight", type=positive_float, default=50.0, help="λ: loss = generator MLM loss + λ · RTD loss"
        )

    def collator(self, tokenizer, args, seed: int):
        return SamplingCollator(tokenizer, args.mlm_probability, seed, **ELECTRA_MASKING)

    def training_overrides(self, config) -> dict:
        return {}  # the generator predicts sparsely (GeneratorDiscriminator); the discriminator has no LM head

    def training_model(self, model, args, tokenizer, data):
        if not isinstance(model, TransformerEncoderForPreTraining):
            raise UsageError(
                f"rtd trains this package's encoder, not {type(model).__name__}: convert the checkpoint first "
                "(python -m transformer_encoder.convert)."
            )
        generator = load_generator(args, model) or fresh_generator(model, args)
        return GeneratorDiscriminator(generator, model, args.rtd_weight, tokenizer)

    def loss_items(self, batch):
        """Two counts: the masked tokens (the generator's loss) and the real tokens (the discriminator's)."""
        tokens = batch["attention_mask"].sum() if "attention_mask" in batch else torch.tensor(batch["input_ids"].numel())
        return torch.stack([(batch["labels"] != -100).sum(), tokens.to(batch["labels"].device)])

    @torch.no_grad()
    def evaluate(self, accelerator, model, loader, data) -> dict:
        model.eval()
        # generator loss sum, discriminator loss sum, masked, tokens, correct, replaced, predicted replaced, both
        totals = torch.zeros(8, device=accelerator.device, dtype=torch.float64)
        for batch in loader:
            out = model(**batch, num_items_in_batch=torch.ones(2, device=accelerator.device))  # sums
            counted = batch["attention_mask"].bool() if "attention_mask" in batch else torch.ones_like(out.replaced)
            predicted, replaced = (out.logits > 0)[counted], out.replaced[counted]
            totals += torch.stack([
                out.generator_loss.double(), out.discriminator_loss.double(), *(
                    t.sum().double() for t in (batch["labels"] != -100, counted, predicted == replaced, replaced,
                                               predicted, predicted & replaced)
                ),
            ])
        generator_sum, discriminator_sum, masked, tokens, correct, replaced, predicted, hits = (
            accelerator.reduce(totals, "sum").tolist()
        )
        generator_loss, discriminator_loss = generator_sum / max(masked, 1), discriminator_sum / max(tokens, 1)
        precision, recall = hits / max(predicted, 1), hits / max(replaced, 1)
        rtd_weight = accelerator.unwrap_model(model).rtd_weight
        return {
            "eval_loss": generator_loss + rtd_weight * discriminator_loss,
            "generator_loss": generator_loss,
            "generator_perplexity": math.exp(min(generator_loss, 50)),
            "discriminator_loss": discriminator_loss,
            "rtd_accuracy": correct / max(tokens, 1),
            "rtd_precision": precision,
            "rtd_recall": recall,
            "rtd_f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
            "replaced_share": replaced / max(tokens, 1),
        }

    def card_tags(self) -> list[str]:
        return ["electra", "replaced-token-detection"]

    def card_usage(self, model_name: str) -> str:
        return f"""This folder is the discriminator: an encoder to fine-tune, as one pretrained by masked LM.

```python
from transformers import AutoModelForSequenceClassification, AutoModelForPreTraining
classifier = AutoModelForSequenceClassification.from_pretrained("{model_name}", num_labels=2, trust_remote_code=True)
discriminator = AutoModelForPreTraining.from_pretrained("{model_name}", trust_remote_code=True)  # logit > 0: replaced
```

The generator it was trained with is a masked LM in `{GENERATOR_FOLDER}/`
(`AutoModelForMaskedLM.from_pretrained("{model_name}", subfolder="{GENERATOR_FOLDER}", trust_remote_code=True)`)."""


class SamplingCollator(SeededMaskingCollator):
    """Masked blocks, plus one uniform number per token drawn from the same block-seeded generator: the generator's
    sample at a masked token is read off with it (`sample_tokens`), so that every block gets the same replacements
    whatever the number of processes or where a run resumed."""

    def mask_block(self, example) -> dict:
        row = super().mask_block(example)
        row["sampling_uniforms"] = torch.rand(row["input_ids"].shape, generator=self.masker.generator)
        return row


def sample_tokens(logits: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """One token per row of logits (n, vocab), drawn from softmax(logits) by inverse transform sampling with the
    given uniform numbers (n,) in [0, 1): the token i with F(i - 1) <= u · F(V) < F(i), F the cumulative sum of
    the probabilities (scaled by F(V) so that rounding in the sum cannot run past the vocabulary)."""
    cumulative = logits.float().softmax(-1).cumsum(-1)
    targets = (uniforms.float() * cumulative[:, -1]).unsqueeze(-1)
    return torch.searchsorted(cumulative, targets, right=True).squeeze(-1).clamp(max=logits.shape[-1] - 1)


@dataclass
class GeneratorDiscriminatorOutput(ModelOutput):
    loss: torch.Tensor | None = None  # generator_loss + rtd_weight · discriminator_loss
    generator_loss: torch.Tensor | None = None
    discriminator_loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None  # the discriminator's, (batch, seq)
    replaced: torch.Tensor | None = None  # (batch, seq) bool: the discriminator's targets


class GeneratorDiscriminator(nn.Module):
    """ELECTRA's pair, trained as one module: the generator (a masked LM) and the discriminator share one embeddings
    module (token, position and segment embeddings and their norm), and the generator's output projection is tied
    to the token embeddings. Saved as two checkpoints: the discriminator in the folder, the generator in
    `generator/`."""

    def __init__(self, generator, discriminator, rtd_weight: float, tokenizer=None):
        super().__init__()
        generator.model.embeddings = discriminator.model.embeddings
        generator.tie_weights()  # its output projection follows the shared token embeddings
        generator.config.sparse_prediction = True  # logits at the masked tokens only, the ones sampled
        self.generator = generator
        self.discriminator = discriminator
        self.rtd_weight = rtd_weight
        self.tokenizer = tokenizer

    @property
    def config(self):
        return self.discriminator.config

    def forward(self, input_ids, labels, sampling_uniforms, attention_mask=None, num_items_in_batch=None):
        """input_ids: the masked blocks; labels: the original tokens where masked, -100 elsewhere;
        sampling_uniforms: a uniform number per token, read where masked. num_items_in_batch, two counts (masked
        tokens, real tokens), normalises each loss by a count across accumulation steps and processes."""
        masked_count, token_count = num_items_in_batch.unbind() if num_items_in_batch is not None else (None, None)
        generated = self.generator(
            input_ids, attention_mask=attention_mask, labels=labels, num_items_in_batch=masked_count
        )
        masked = labels != -100
        with torch.no_grad():
            logits = generated.logits if generated.logits.dim() == 2 else generated.logits[masked]
            original = torch.where(masked, labels, input_ids)
            corrupted = original.masked_scatter(masked, sample_tokens(logits, sampling_uniforms[masked]))
            replaced = corrupted != original  # a sample equal to the original counts as original, as in ELECTRA
        discriminated = self.discriminator(
            corrupted, attention_mask=attention_mask, labels=replaced.long(), num_items_in_batch=token_count
        )
        return GeneratorDiscriminatorOutput(
            loss=generated.loss + self.rtd_weight * discriminated.loss,
            generator_loss=generated.loss,
            discriminator_loss=discriminated.loss,
            logits=discriminated.logits,
            replaced=replaced,
        )

    def save_pretrained(self, save_directory, is_main_process: bool = True, state_dict: dict | None = None):
        """The discriminator into `save_directory`, the generator (with its tokenizer) into `generator/`."""
        state_dict = self.state_dict() if state_dict is None else state_dict
        folder = Path(save_directory) / GENERATOR_FOLDER
        for prefix, model, target in (("discriminator.", self.discriminator, Path(save_directory)),
                                      ("generator.", self.generator, folder)):
            part = {k.removeprefix(prefix): v for k, v in state_dict.items() if k.startswith(prefix)}
            sparse, model.config.sparse_prediction = model.config.sparse_prediction, False  # training only
            try:
                model.save_pretrained(target, is_main_process=is_main_process, state_dict=part)
            finally:
                model.config.sparse_prediction = sparse
        if is_main_process and self.tokenizer is not None:
            self.tokenizer.save_pretrained(folder)


def generator_config(config, size: float):
    """The generator's config: the discriminator's, with `size` of its layers (at least one) and of its feed-forward
    width. Its width stays the discriminator's, so the two share their embeddings exactly, with no projection."""
    generator = copy.deepcopy(config)
    generator.num_hidden_layers = max(1, round(config.num_hidden_layers * size))
    generator.intermediate_size = max(1, round(config.intermediate_size * size))
    generator.architectures = None
    return generator


def fresh_generator(discriminator, args):
    config = generator_config(discriminator.config, args.generator_size)
    if args.model_name_or_path:
        PartialState().print(
            f"{args.model_name_or_path} has no {GENERATOR_FOLDER}/ beside it: training a fresh generator "
            f"({config.num_hidden_layers} layers, d_ff {config.intermediate_size}).",
            file=sys.stderr,
        )
    return AutoModelForMaskedLM.from_config(config, attn_implementation=args.attn_implementation)


def load_generator(args, discriminator):
    """The generator saved beside a checkpoint (`generator/`), or None where there is none."""
    name = args.model_name_or_path
    if not name or (Path(name).is_dir() and not (Path(name) / GENERATOR_FOLDER / "config.json").is_file()):
        return None
    try:
        generator = AutoModelForMaskedLM.from_pretrained(
            name, subfolder=GENERATOR_FOLDER, attn_implementation=args.attn_implementation
        )
    except OSError as error:
        if Path(name).is_dir():
            raise UsageError(f"Could not load the generator in {Path(name) / GENERATOR_FOLDER}: {error}") from error
        return None  # a Hub repo without a generator
    if generator.config.hidden_size != discriminator.config.hidden_size:
        raise UsageError(
            f"The generator in {name}/{GENERATOR_FOLDER} has hidden size {generator.config.hidden_size}, the "
            f"discriminator {discriminator.config.hidden_size}: they share their embeddings, so they must match."
        )
    if generator.config.vocab_size != discriminator.config.vocab_size:
        generator.resize_token_embeddings(discriminator.config.vocab_size)
    return generator


TASK = ReplacedTokenDetection()
