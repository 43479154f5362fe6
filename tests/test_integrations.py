"""The model used unchanged by the libraries around it: transformers' Trainer and peft's LoRA."""

import pytest
import torch
from datasets import Dataset
from helpers import padded_batch, tiny_config
from transformers import AutoModelForSequenceClassification, Trainer, TrainingArguments

from transformer_encoder import TransformerEncoderForMaskedLM, TransformerEncoderForSequenceClassification


def separable_dataset(n=64, seq=8, seed=0):
    """Label 1 iff token 7 appears: learnable in a few steps by any working encoder."""
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(10, 99, (n, seq), generator=generator)
    labels = torch.arange(n) % 2
    input_ids[labels == 1, 3] = 7
    return Dataset.from_dict({"input_ids": input_ids.tolist(), "attention_mask": [[1] * seq] * n, "labels": labels})


def test_trainer_trains_evaluates_and_saves(tmp_path):
    model = TransformerEncoderForSequenceClassification(tiny_config(num_labels=2))
    args = TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=16,
        learning_rate=3e-3,
        max_steps=40,
        logging_steps=10,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        seed=0,
    )
    data = separable_dataset()
    trainer = Trainer(model=model, args=args, train_dataset=data, eval_dataset=data)
    before = trainer.evaluate()["eval_loss"]
    trainer.train()
    after = trainer.evaluate()["eval_loss"]
    assert after < before * 0.5, (before, after)

    trainer.save_model(str(tmp_path / "final"))
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "final")
    assert isinstance(reloaded, TransformerEncoderForSequenceClassification)
    assert (tmp_path / "final" / "modeling_transformer_encoder.py").exists()


def test_peft_lora_on_the_attention_projections():
    peft = pytest.importorskip("peft")
    base = TransformerEncoderForMaskedLM(tiny_config()).eval()
    input_ids, attention_mask = padded_batch()
    with torch.no_grad():
        reference = base(input_ids, attention_mask=attention_mask).logits

    lora_config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "out_proj"])
    model = peft.get_peft_model(base, lora_config)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in name for name in trainable)
    # 2 layers x 4 projections, each with lora_A and lora_B
    assert len(trainable) == 2 * 4 * 2

    with torch.no_grad():  # LoRA starts as the identity: B = 0
        torch.testing.assert_close(model(input_ids, attention_mask=attention_mask).logits, reference)
    labels = torch.where(attention_mask.bool(), input_ids, -100)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(3):
        loss = model(input_ids, attention_mask=attention_mask, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    with torch.no_grad():
        adapted = model(input_ids, attention_mask=attention_mask).logits
        merged = model.merge_and_unload()(input_ids, attention_mask=attention_mask).logits
    assert (adapted - reference).abs().max() > 1e-4
    torch.testing.assert_close(merged, adapted, rtol=1e-4, atol=1e-4)
