"""Replaced-token detection (ELECTRA): the discriminator head and its loss, the generator's sampling, the weights the
two share, the combined loss and its normalisation, and the `rtd` task of the training CLI end to end (several
processes, accumulation, resume, fine-tuning from its output)."""

import argparse
import json
import math
import random
import shutil

import pytest
import torch
import torch.nn.functional as F
from helpers import padded_batch, tiny_config
from test_training import (
    EXACT,
    TINY_MODEL,
    TWO_PROCESSES,
    card_settings,
    cli,
    corpus,  # noqa: F401  (a fixture)
    final_weights,
    logged_losses,
    max_difference,
    run_main,  # noqa: F401  (a fixture)
    sentiment_csv,
    tiny_tokenizer,
)
from transformers import AutoModel, AutoModelForPreTraining, AutoModelForSequenceClassification, pipeline

from transformer_encoder import (
    TransformerEncoderForMaskedLM,
    TransformerEncoderForPreTraining,
    TransformerEncoderModel,
)
from transformer_encoder.training.tasks.rtd import (
    TASK,
    GeneratorDiscriminator,
    SamplingCollator,
    generator_config,
    sample_tokens,
)

MASK = 98  # the [MASK] id of the hand-made batches (any id works for the model)


# ---------------------------------------------------------------------------------------------------------------------
# The discriminator head
# ---------------------------------------------------------------------------------------------------------------------


def test_discriminator_loss_on_a_hand_made_case():
    """Every logit set to log 3 (σ = 3/4) by hand; of the 4 tokens that count, 1 replaced:
    loss = -(log 3/4 + 3 log 1/4) / 4. Padding and -100 labels do not count."""
    model = TransformerEncoderForPreTraining(tiny_config()).eval()
    with torch.no_grad():
        model.discriminator_predictions.dense_prediction.weight.zero_()
        model.discriminator_predictions.dense_prediction.bias.fill_(math.log(3))
    input_ids = torch.tensor([[5, 6, 7, 8], [9, 10, 0, 0]])
    attention_mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    labels = torch.tensor([[1, 0, -100, 0], [-100, 0, 1, 1]])  # counted: (0,0)=1, (0,1)=0, (0,3)=0, (1,1)=0
    out = model(input_ids, attention_mask=attention_mask, labels=labels)
    expected = -(math.log(3 / 4) + 3 * math.log(1 / 4)) / 4
    assert out.logits.shape == (2, 4)
    assert out.loss.item() == pytest.approx(expected, rel=1e-6)
    summed = model(input_ids, attention_mask=attention_mask, labels=labels, num_items_in_batch=torch.tensor(8))
    assert summed.loss.item() == pytest.approx(expected * 4 / 8, rel=1e-6)


def test_discriminator_loss_is_the_binary_cross_entropy_of_its_logits():
    model = TransformerEncoderForPreTraining(tiny_config()).eval()
    input_ids, attention_mask = padded_batch()
    labels = torch.randint(0, 2, input_ids.shape)
    out = model(input_ids, attention_mask=attention_mask, labels=labels)
    z, y = out.logits.double()[attention_mask.bool()], labels.double()[attention_mask.bool()]
    expected = -(y * torch.sigmoid(z).log() + (1 - y) * (1 - torch.sigmoid(z)).log()).mean()
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_the_discriminator_loads_as_every_head_and_by_its_auto_class(tmp_path):
    TransformerEncoderForPreTraining(tiny_config()).save_pretrained(tmp_path)
    assert isinstance(AutoModelForPreTraining.from_pretrained(tmp_path), TransformerEncoderForPreTraining)
    assert isinstance(AutoModel.from_pretrained(tmp_path), TransformerEncoderModel)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["auto_map"]["AutoModelForPreTraining"].endswith(".TransformerEncoderForPreTraining")


# ---------------------------------------------------------------------------------------------------------------------
# The generator: sampling, sizing, weight sharing
# ---------------------------------------------------------------------------------------------------------------------


def test_sampling_inverts_the_cumulative_distribution():
    probabilities = torch.tensor([0.1, 0.2, 0.0, 0.7])
    logits = probabilities.log().expand(6, 4)  # softmax gives the probabilities back
    uniforms = torch.tensor([0.0, 0.05, 0.11, 0.29, 0.31, 0.999])
    assert sample_tokens(logits, uniforms).tolist() == [0, 0, 1, 1, 3, 3]  # never token 2, whose probability is 0
    logits = torch.randn(5, generator=torch.Generator().manual_seed(1))
    many = sample_tokens(logits.expand(40_000, 5), torch.rand(40_000, generator=torch.Generator().manual_seed(0)))
    frequencies = torch.bincount(many, minlength=5).double() / 40_000
    assert (frequencies - logits.softmax(-1).double()).abs().max() < 0.01  # 4 standard errors at most


@pytest.mark.parametrize("size, layers, d_ff", [(0.25, 1, 16), (0.5, 2, 32), (1.0, 4, 64), (0.01, 1, 1)])
def test_generator_size_scales_depth_and_feed_forward_width(size, layers, d_ff):
    config = generator_config(tiny_config(num_hidden_layers=4, intermediate_size=64), size)
    assert (config.num_hidden_layers, config.intermediate_size, config.hidden_size) == (layers, d_ff, 32)


def pair(rtd_weight=50.0, **overrides):
    config = tiny_config(**overrides)
    discriminator = TransformerEncoderForPreTraining(config)
    generator = TransformerEncoderForMaskedLM(generator_config(config, 0.5))
    return GeneratorDiscriminator(generator, discriminator, rtd_weight)


def masked_batch(seed=0):
    """Blocks with a third of the tokens masked: [MASK] in the input, the original in the labels."""
    generator = torch.Generator().manual_seed(seed)
    original = torch.randint(1, MASK, (3, 10), generator=generator)
    masked = torch.rand(3, 10, generator=generator) < 0.33
    return {
        "input_ids": original.masked_fill(masked, MASK),
        "labels": original.masked_fill(~masked, -100),
        "sampling_uniforms": torch.rand(3, 10, generator=generator),
    }


def test_generator_and_discriminator_share_their_embeddings():
    model = pair(position_embedding_type="learned", type_vocab_size=2)
    generator, discriminator = model.generator, model.discriminator
    assert generator.model.embeddings is discriminator.model.embeddings
    shared = discriminator.model.embeddings.token_embeddings.weight
    assert generator.lm_head.decoder.weight is shared  # the generator's output projection too
    assert len(generator.model.layers) == 1 and len(discriminator.model.layers) == 2
    # the shared table learns from both losses: its gradient is the sum of the two
    batch = masked_batch()
    grads = {}
    for name in ("generator_loss", "discriminator_loss", "loss"):
        model.zero_grad()
        torch.manual_seed(0)
        getattr(model(**batch), name).backward()
        grads[name] = shared.grad.clone()
    assert grads["generator_loss"].abs().sum() > 0 and grads["discriminator_loss"].abs().sum() > 0
    torch.testing.assert_close(grads["loss"], grads["generator_loss"] + 50 * grads["discriminator_loss"])
    torch.optim.AdamW(model.parameters(), lr=0.1).step()
    assert generator.model.embeddings.token_embeddings.weight is shared and generator.lm_head.decoder.weight is shared


def reference_loss(model, batch, rtd_weight):
    """The ELECTRA loss computed separately, in float64 where it is a formula: the generator's cross-entropy at the
    masked tokens, its samples by the inverse CDF one token at a time, then the discriminator's binary
    cross-entropy on the corrupted blocks."""
    masked = batch["labels"] != -100
    dense = TransformerEncoderForMaskedLM(model.generator.config)
    dense.load_state_dict(model.generator.state_dict())
    dense.config.sparse_prediction = False
    with torch.no_grad():
        logits = dense(batch["input_ids"]).logits[masked].double()
    generator_loss = F.cross_entropy(logits, batch["labels"][masked])
    corrupted = torch.where(masked, batch["labels"], batch["input_ids"])
    positions = masked.nonzero().tolist()
    for (row, column), token_logits in zip(positions, logits):
        cumulative = token_logits.softmax(-1).cumsum(-1)
        u = batch["sampling_uniforms"][row, column].item() * cumulative[-1].item()
        corrupted[row, column] = next(i for i, c in enumerate(cumulative.tolist()) if c > u)
    replaced = corrupted != torch.where(masked, batch["labels"], batch["input_ids"])
    with torch.no_grad():
        z = model.discriminator(corrupted).logits.double()
    y = replaced.double()
    discriminator_loss = -(y * torch.sigmoid(z).log() + (1 - y) * (1 - torch.sigmoid(z)).log()).mean()
    return generator_loss + rtd_weight * discriminator_loss, replaced


def test_the_loss_is_generator_mlm_plus_lambda_times_rtd():
    model = pair(rtd_weight=7.0).eval()
    batch = masked_batch()
    out = model(**batch)
    expected, replaced = reference_loss(model, batch, 7.0)
    assert replaced.any() and not replaced.all()
    torch.testing.assert_close(out.replaced, replaced)
    assert out.logits.shape == (3, 10) and out.loss.ndim == 0
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5)
    # a sample equal to the original is not a replacement
    assert (out.replaced <= (batch["labels"] != -100)).all()
    # normalised by outside counts (masked tokens, real tokens), each loss is its sum over that count
    counts = torch.tensor([40.0, 90.0])
    normalised = model(**batch, num_items_in_batch=counts)
    masked_count, token_count = (batch["labels"] != -100).sum().item(), batch["labels"].numel()
    assert normalised.generator_loss.item() == pytest.approx(out.generator_loss.item() * masked_count / 40, rel=1e-5)
    assert normalised.discriminator_loss.item() == pytest.approx(
        out.discriminator_loss.item() * token_count / 90, rel=1e-5
    )


def test_the_masks_are_electras_and_the_uniforms_are_seeded_per_block():
    tokenizer = tiny_tokenizer()
    rng = random.Random(0)
    blocks = [{"input_ids": [tokenizer.cls_token_id] + [rng.randrange(5, len(tokenizer)) for _ in range(62)]
               + [tokenizer.sep_token_id], "example_id": i} for i in range(300)]
    collator = SamplingCollator(tokenizer, 0.15, seed=3, mask_replace_prob=0.85, random_replace_prob=0.0)
    batch = collator(blocks)
    original = torch.tensor([b["input_ids"] for b in blocks])
    masked = batch["labels"] != -100
    became_mask = (batch["input_ids"] == tokenizer.mask_token_id) & masked
    assert (became_mask | (batch["input_ids"] == original))[masked].all()  # [MASK] or unchanged, never random
    assert abs(became_mask.sum().item() / masked.sum().item() - 0.85) < 0.03
    assert batch["sampling_uniforms"].shape == original.shape and 0 <= batch["sampling_uniforms"].min()
    alone = collator([blocks[7]])
    torch.testing.assert_close(alone["sampling_uniforms"][0], batch["sampling_uniforms"][7])
    collator.set_epoch(1)
    assert not torch.equal(collator([blocks[7]])["sampling_uniforms"][0], batch["sampling_uniforms"][7])


# ---------------------------------------------------------------------------------------------------------------------
# The CLI
# ---------------------------------------------------------------------------------------------------------------------

RESUMABLE = [*TINY_MODEL, "--max_train_steps", 6, "--checkpointing_steps", 3, "--checkpoints_total_limit", 0]


@pytest.fixture(scope="module")
def rtd_run(tmp_path_factory, corpus):  # noqa: F811
    """A tiny rtd run with dropout on and checkpoints at steps 3 and 6."""
    out = tmp_path_factory.mktemp("runs") / "rtd"
    cli("rtd", "--train_file", corpus, "--output_dir", out, "--generator_size", 0.5, *RESUMABLE)
    return out


def test_rtd_saves_the_discriminator_and_the_generator_beside_it(rtd_run):
    assert {"config.json", "model.safetensors", "tokenizer.json", "README.md", "modeling_transformer_encoder.py"} <= {
        p.name for p in rtd_run.iterdir()
    }
    assert isinstance(AutoModelForPreTraining.from_pretrained(rtd_run), TransformerEncoderForPreTraining)
    assert isinstance(AutoModel.from_pretrained(rtd_run), TransformerEncoderModel)
    generator_folder = rtd_run / "generator"
    generator = json.loads((generator_folder / "config.json").read_text())
    assert generator["architectures"] == ["TransformerEncoderForMaskedLM"] and generator["sparse_prediction"] is False
    assert generator["num_hidden_layers"] == 1  # half of the discriminator's 1 layer, at least one
    assert generator["intermediate_size"] == 32  # half of 64
    assert len(pipeline("fill-mask", model=str(generator_folder))("the [MASK] sat")) == 5
    discriminator, generator_weights = final_weights(rtd_run), final_weights(generator_folder)
    name = "model.embeddings.token_embeddings.weight"
    assert torch.equal(discriminator[name], generator_weights[name])

    results = json.loads((rtd_run / "all_results.json").read_text())
    assert results["train_steps"] == 6
    assert 0 < results["replaced_share"] < 0.15 and 0 <= results["rtd_accuracy"] <= 1
    assert results["eval_loss"] == pytest.approx(results["generator_loss"] + 50 * results["discriminator_loss"])
    card = (rtd_run / "README.md").read_text()
    assert "pipeline_tag" not in card and "replaced-token-detection" in card and "rtd_accuracy" in card
    assert "AutoModelForSequenceClassification" in card and card_settings(rtd_run)["rtd_weight"] == 50


def test_continued_pretraining_takes_the_generator_beside_the_checkpoint(rtd_run, tmp_path, capsys):
    args = argparse.Namespace(model_name_or_path=str(rtd_run), generator_size=0.25, rtd_weight=50.0,
                              attn_implementation="sdpa")
    model = TASK.training_model(AutoModelForPreTraining.from_pretrained(rtd_run), args, None, None)
    saved = final_weights(rtd_run / "generator")
    loaded = model.generator.state_dict()
    assert max_difference({k: loaded[k] for k in saved}, saved) == 0.0
    assert model.generator.model.embeddings is model.discriminator.model.embeddings
    assert "fresh generator" not in capsys.readouterr().err
    # a masked-LM checkpoint has no generator: a fresh one, said so
    TransformerEncoderForMaskedLM(tiny_config()).save_pretrained(tmp_path / "mlm")
    args.model_name_or_path = str(tmp_path / "mlm")
    model = TASK.training_model(AutoModelForPreTraining.from_pretrained(tmp_path / "mlm"), args, None, None)
    assert "has no generator/ beside it: training a fresh generator" in capsys.readouterr().err
    assert model.generator.config.num_hidden_layers == 1 and model.generator.lm_head.decoder.weight is (
        model.discriminator.model.embeddings.token_embeddings.weight
    )


def test_rtd_resumes_bit_identically(rtd_run, tmp_path, corpus):  # noqa: F811
    """The run's step-3 checkpoint, as an interrupted run leaves it, resumed (dropout on, RNG states restored)."""
    interrupted = tmp_path / "interrupted"
    shutil.copytree(rtd_run, interrupted, ignore=shutil.ignore_patterns("step_6", "generator"))
    (interrupted / "model.safetensors").unlink()
    result = cli("rtd", "--train_file", corpus, "--output_dir", interrupted, "--generator_size", 0.5, *RESUMABLE,
                 "--resume_from_checkpoint", "latest")
    assert "step_3" in result.stdout + result.stderr
    assert max_difference(final_weights(interrupted), final_weights(rtd_run)) == 0.0
    assert max_difference(final_weights(interrupted / "generator"), final_weights(rtd_run / "generator")) == 0.0


def test_two_processes_and_accumulation_match_one_process(tmp_path, corpus):  # noqa: F811
    common = ["rtd", "--train_file", corpus, *EXACT]
    cli(*common, "--output_dir", tmp_path / "one", "--per_device_train_batch_size", 8)
    cli(*common, "--output_dir", tmp_path / "accumulated", "--per_device_train_batch_size", 4,
        "--gradient_accumulation_steps", 2)
    cli(*common, "--output_dir", tmp_path / "two", "--per_device_train_batch_size", 4, **TWO_PROCESSES)
    assert card_settings(tmp_path / "two")["num_processes"] == 2
    for folder in ("", "generator"):
        reference = final_weights(tmp_path / "one" / folder)
        assert max_difference(final_weights(tmp_path / "accumulated" / folder), reference) < 1e-5
        assert max_difference(final_weights(tmp_path / "two" / folder), reference) < 1e-5
    losses = {name: logged_losses(tmp_path / name) for name in ("one", "accumulated", "two")}
    assert losses["two"] == pytest.approx(losses["one"], abs=1e-4)
    assert losses["accumulated"] == pytest.approx(losses["one"], abs=1e-4)


def test_the_discriminator_fine_tunes_with_sequence_classification(rtd_run, tmp_path):
    classifier = AutoModelForSequenceClassification.from_pretrained(rtd_run, num_labels=2)
    encoder = {f"model.{k}": v for k, v in classifier.model.state_dict().items()}
    discriminator = final_weights(rtd_run)
    assert max_difference({k: encoder[k] for k in discriminator if k.startswith("model.")},
                          {k: v for k, v in discriminator.items() if k.startswith("model.")}) == 0.0
    out = tmp_path / "cls"
    cli(
        "sequence-classification", "--model_name_or_path", rtd_run,
        "--train_file", sentiment_csv(tmp_path, 160, 0), "--validation_file", sentiment_csv(tmp_path, 40, 1),
        "--output_dir", out, "--num_train_epochs", 8, "--learning_rate", 3e-3, "--per_device_train_batch_size", 16,
    )
    assert json.loads((out / "all_results.json").read_text())["accuracy"] >= 0.9
    assert pipeline("text-classification", model=str(out))("the cat sat good on the mat")[0]["label"] == "positive"


@pytest.mark.parametrize(
    "option, value, message",
    [
        ("--generator_size", "0", "argument --generator_size: must be above 0 and at most 1, got 0"),
        ("--generator_size", "1.5", "argument --generator_size: must be above 0 and at most 1, got 1.5"),
        ("--rtd_weight", "-1", "argument --rtd_weight: must be > 0, got -1"),
    ],
)
def test_bad_rtd_options_stop_with_one_line(run_main, tmp_path, corpus, option, value, message):  # noqa: F811
    err = run_main("rtd", "--train_file", corpus, "--output_dir", tmp_path / "out", option, value)
    assert err.count("\n") == 1 and message in err
    assert not (tmp_path / "out").exists()
