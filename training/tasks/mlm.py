"""Masked language modeling (BERT's pretraining task): texts packed into full blocks, 15 % of tokens masked
dynamically, loss and perplexity over the masked tokens."""

import math
from itertools import chain

import torch
from transformers import AutoModelForMaskedLM, DataCollatorForLanguageModeling

from ... import TransformerEncoderConfig
from ..data import column_names, map_options, pick_column
from ..errors import UsageError
from ..option_types import open_unit_interval
from .base import Task, TaskData


class MaskedLanguageModeling(Task):
    name = "mlm"
    auto_class = AutoModelForMaskedLM
    pipeline_tag = "fill-mask"
    title = "Masked language modeling"
    metric = "perplexity"
    card_metrics = ("perplexity",)
    text_columns = ("text",)
    pretraining = True

    def add_arguments(self, group):
        group.add_argument(
            "--mlm_probability", type=open_unit_interval, default=0.15, help="share of tokens masked (mlm and rtd)"
        )

    def prepare(self, args, raw, tokenizer, accelerator, start_config) -> TaskData:
        text_column = pick_column(raw["train"], args.text_column_name, self.text_columns, "--text_column_name")
        packed = pack_for_mlm(raw, tokenizer, text_column, args, accelerator.main_process_first)
        return TaskData(
            train=packed["train"],
            validation=packed.get("validation"),
            collator=self.collator(tokenizer, args, args.seed),
            # Evaluation masks the same tokens every time, so that eval losses are comparable across steps.
            eval_collator=self.collator(tokenizer, args, args.seed + 1),
            columns={"text": text_column},
        )

    def collator(self, tokenizer, args, seed: int):
        return SeededMaskingCollator(tokenizer, args.mlm_probability, seed)

    def training_overrides(self, config) -> dict:
        # Training needs logits at the masked tokens only: the cheaper LM head.
        return {"sparse_prediction": True} if isinstance(config, TransformerEncoderConfig) else {}

    def loss_items(self, batch):
        return (batch["labels"] != -100).sum()

    @torch.no_grad()
    def evaluate(self, accelerator, model, loader, data) -> dict:
        model.eval()
        loss_sum = torch.zeros((), device=accelerator.device)
        items = torch.zeros((), device=accelerator.device)
        for batch in loader:
            loss_sum += model(**batch, num_items_in_batch=1).loss.float()  # summed over the masked tokens
            items += self.loss_items(batch)
        loss_sum, items = accelerator.reduce(loss_sum, "sum"), accelerator.reduce(items.float(), "sum")
        eval_loss = (loss_sum / items.clamp(min=1)).item()
        return {"eval_loss": eval_loss, "perplexity": math.exp(min(eval_loss, 50))}


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
        map_kwargs = {} if args.streaming else map_options(args)  # a stream maps lazily, without a cache
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


def _number(batch, indices):
    return {"example_id": list(indices)}


class SeededMaskingCollator:
    """BERT's dynamic masking (DataCollatorForLanguageModeling: 15 % of tokens; of those 80 % [MASK], 10 % a random
    token, 10 % unchanged), with the random draws seeded by (seed, epoch, block number). Every block is then masked
    the same way whatever the number of processes or where a run resumed, so those runs end with equal weights.
    `masking` takes DataCollatorForLanguageModeling's other shares (`mask_replace_prob`, `random_replace_prob`)."""

    def __init__(self, tokenizer, mlm_probability: float, seed: int, **masking):
        self.masker = DataCollatorForLanguageModeling(tokenizer, mlm_probability=mlm_probability, **masking)
        self.tokenizer = tokenizer
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int):
        self.epoch = epoch

    def __call__(self, examples):
        rows = [self.mask_block(example) for example in examples]
        return {key: torch.stack([row[key] for row in rows]) for key in rows[0]}

    def mask_block(self, example) -> dict:
        """One block masked with its own generator, seeded by (seed, epoch, block number)."""
        ids = torch.tensor([example["input_ids"]])
        special = torch.tensor([self.tokenizer.get_special_tokens_mask(ids[0].tolist(), already_has_special_tokens=True)])
        self.masker.generator = torch.Generator().manual_seed(
            (self.seed * 1_000_003 + self.epoch * 7_919 + int(example["example_id"])) % 2**63
        )
        masked, target = self.masker.torch_mask_tokens(ids, special_tokens_mask=special)
        return {"input_ids": masked[0], "labels": target[0]}


TASK = MaskedLanguageModeling()
