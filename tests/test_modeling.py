"""What a transformers user expects of a model: heads, losses, outputs, embeddings, checkpointing, bad inputs."""

import pytest
import torch
import torch.nn.functional as F
from helpers import padded_batch, tiny_config

import transformer_encoder
from transformer_encoder import (
    TransformerEncoderForMaskedLM,
    TransformerEncoderForPreTraining,
    TransformerEncoderForQuestionAnswering,
    TransformerEncoderForSequenceClassification,
    TransformerEncoderForTokenClassification,
    TransformerEncoderModel,
)

HEADS = list(transformer_encoder.HEADS.values())  # every head the package registers


def labels_for(model_class, input_ids, num_labels=3):
    batch, seq = input_ids.shape
    if model_class is TransformerEncoderForMaskedLM:
        return {"labels": torch.where(torch.rand(batch, seq) < 0.3, input_ids, -100)}
    if model_class is TransformerEncoderForPreTraining:
        return {"labels": torch.randint(0, 2, (batch, seq))}
    if model_class is TransformerEncoderForSequenceClassification:
        return {"labels": torch.randint(0, num_labels, (batch,))}
    if model_class is TransformerEncoderForTokenClassification:
        return {"labels": torch.randint(0, num_labels, (batch, seq))}
    if model_class is TransformerEncoderForQuestionAnswering:
        return {"start_positions": torch.randint(0, seq, (batch,)), "end_positions": torch.randint(0, seq, (batch,))}
    return {}


# ---------------------------------------------------------------------------------------------------------------------
# Outputs
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model_class", HEADS)
def test_heads_shapes_and_tuple_outputs(model_class):
    model = model_class(tiny_config(num_labels=3)).eval()
    input_ids, attention_mask = padded_batch()
    batch, seq = input_ids.shape
    labels = labels_for(model_class, input_ids)
    out = model(input_ids, attention_mask=attention_mask, **labels)
    expected = {
        TransformerEncoderModel: ("last_hidden_state", (batch, seq, 32)),
        TransformerEncoderForMaskedLM: ("logits", (batch, seq, 99)),
        TransformerEncoderForPreTraining: ("logits", (batch, seq)),
        TransformerEncoderForSequenceClassification: ("logits", (batch, 3)),
        TransformerEncoderForTokenClassification: ("logits", (batch, seq, 3)),
        TransformerEncoderForQuestionAnswering: ("start_logits", (batch, seq)),
    }[model_class]
    assert out[expected[0]].shape == expected[1]
    if model_class is not TransformerEncoderModel:
        assert out.loss.ndim == 0 and torch.isfinite(out.loss)

    as_tuple = model(input_ids, attention_mask=attention_mask, return_dict=False, **labels)
    assert isinstance(as_tuple, tuple) and len(as_tuple) == len(out.to_tuple())
    for got, expected in zip(as_tuple, out.to_tuple()):
        torch.testing.assert_close(got, expected)


def test_hidden_states_and_attentions():
    config = tiny_config(attn_implementation="eager")
    model = TransformerEncoderModel(config).eval()
    input_ids, attention_mask = padded_batch(lengths=(7, 4))
    out = model(input_ids, attention_mask=attention_mask, output_hidden_states=True, output_attentions=True)
    assert len(out.hidden_states) == config.num_hidden_layers + 1  # embeddings, then every block
    torch.testing.assert_close(out.hidden_states[-1], out.last_hidden_state)
    assert len(out.attentions) == config.num_hidden_layers
    weights = out.attentions[0]
    assert weights.shape == (2, config.num_attention_heads, 7, 7)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, config.num_attention_heads, 7))
    assert weights[1, :, :, 4:].abs().max() == 0  # no weight on padded keys


def test_masked_lm_ignores_minus_100_labels():
    model = TransformerEncoderForMaskedLM(tiny_config()).eval()
    input_ids, attention_mask = padded_batch()
    labels = torch.full_like(input_ids, -100)
    labels[0, 1], labels[1, 3], labels[2, 0] = 5, 17, 42
    out = model(input_ids, attention_mask=attention_mask, labels=labels)
    picked = labels != -100
    expected = F.cross_entropy(out.logits[picked], labels[picked])
    torch.testing.assert_close(out.loss, expected)
    # normalised by a count from outside (gradient accumulation, several processes)
    summed = model(input_ids, attention_mask=attention_mask, labels=labels, num_items_in_batch=torch.tensor(6))
    torch.testing.assert_close(summed.loss, expected * 3 / 6)


def test_sparse_prediction_gives_the_same_loss_and_gradients():
    input_ids, attention_mask = padded_batch()
    labels = labels_for(TransformerEncoderForMaskedLM, input_ids)["labels"]
    results = []
    for sparse in (False, True):
        torch.manual_seed(0)
        model = TransformerEncoderForMaskedLM(tiny_config(sparse_prediction=sparse))
        out = model(input_ids, attention_mask=attention_mask, labels=labels)
        out.loss.backward()
        results.append((out, model.model.embeddings.token_embeddings.weight.grad))
    (dense, dense_grad), (sparse, sparse_grad) = results
    labelled = labels != -100
    assert sparse.logits.shape == (labelled.sum(), 99)
    torch.testing.assert_close(sparse.logits, dense.logits[labelled])
    torch.testing.assert_close(sparse.loss, dense.loss)
    torch.testing.assert_close(sparse_grad, dense_grad)


def test_fast_path_runs_position_wise_layers_on_real_tokens_only():
    model = TransformerEncoderModel(tiny_config(attn_implementation="sdpa")).eval()
    input_ids, attention_mask = padded_batch(lengths=(9, 5, 1))
    rows = []
    for layer in (model.layers[0].feed_forward.fc1, model.layers[0].attention.q_proj):
        layer.register_forward_hook(lambda module, args, out: rows.append(tuple(args[0].shape[:-1])))
    with torch.no_grad():
        model(input_ids, attention_mask=attention_mask)
    assert rows == [(16,), (16,)]  # 9 + 5 + 1 real tokens in one tile of 16 rows, not 3 x 9 positions
    model.set_attn_implementation("eager")  # the reference computes every position, as the equations do
    rows.clear()
    with torch.no_grad():
        model(input_ids, attention_mask=attention_mask)
    assert rows == [(3, 9), (3, 9)]


@pytest.mark.parametrize(
    "num_labels, labels, problem_type",
    [
        (1, torch.tensor([0.5, -1.0, 2.0]), "regression"),
        (3, torch.tensor([0, 2, 1]), "single_label_classification"),
        (3, torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]]), "multi_label_classification"),
    ],
)
def test_sequence_classification_problem_types(num_labels, labels, problem_type):
    model = TransformerEncoderForSequenceClassification(tiny_config(num_labels=num_labels)).eval()
    input_ids, attention_mask = padded_batch()
    out = model(input_ids, attention_mask=attention_mask, labels=labels)
    assert model.config.problem_type == problem_type
    expected = {
        "regression": lambda: F.mse_loss(out.logits.squeeze(-1), labels),
        "single_label_classification": lambda: F.cross_entropy(out.logits, labels),
        "multi_label_classification": lambda: F.binary_cross_entropy_with_logits(out.logits, labels),
    }[problem_type]()
    torch.testing.assert_close(out.loss, expected)


def test_token_classification_ignores_minus_100_labels():
    model = TransformerEncoderForTokenClassification(tiny_config(num_labels=5)).eval()
    input_ids, attention_mask = padded_batch()
    labels = torch.randint(0, 5, input_ids.shape).masked_fill(attention_mask == 0, -100)
    out = model(input_ids, attention_mask=attention_mask, labels=labels)
    real = labels != -100
    torch.testing.assert_close(out.loss, F.cross_entropy(out.logits[real], labels[real]))


@pytest.mark.parametrize("position", ["sinusoidal", "learned", "rotary"])
def test_inputs_embeds_and_position_ids_match_the_defaults(position):
    """Positions given per row, (batch, seq), give what the default (1, seq) positions broadcast over the batch give."""
    model = TransformerEncoderModel(tiny_config(type_vocab_size=2, position_embedding_type=position)).eval()
    input_ids, attention_mask = padded_batch()
    with torch.no_grad():
        reference = model(input_ids, attention_mask=attention_mask).last_hidden_state
        embeds = model.get_input_embeddings()(input_ids)
        from_embeds = model(inputs_embeds=embeds, attention_mask=attention_mask).last_hidden_state
        positions = torch.arange(input_ids.shape[1]).expand_as(input_ids)
        with_positions = model(input_ids, attention_mask=attention_mask, position_ids=positions).last_hidden_state
        with_segments = model(
            input_ids, attention_mask=attention_mask, token_type_ids=torch.zeros_like(input_ids)
        ).last_hidden_state
        other_segments = model(
            input_ids, attention_mask=attention_mask, token_type_ids=torch.ones_like(input_ids)
        ).last_hidden_state
    torch.testing.assert_close(from_embeds, reference)
    torch.testing.assert_close(with_positions, reference)
    torch.testing.assert_close(with_segments, reference)
    assert (other_segments - reference).abs().max() > 1e-3


# ---------------------------------------------------------------------------------------------------------------------
# Weights
# ---------------------------------------------------------------------------------------------------------------------


def test_masked_lm_ties_output_projection_to_embeddings():
    tied = TransformerEncoderForMaskedLM(tiny_config())
    assert tied.lm_head.decoder.weight is tied.model.embeddings.token_embeddings.weight
    untied = TransformerEncoderForMaskedLM(tiny_config(tie_word_embeddings=False))
    assert untied.lm_head.decoder.weight is not untied.model.embeddings.token_embeddings.weight


@pytest.mark.parametrize("model_class", HEADS)
def test_gradients_reach_every_parameter(model_class):
    config = tiny_config(num_labels=3, type_vocab_size=2, position_embedding_type="learned", norm_first=True)
    model = model_class(config).train()
    input_ids, attention_mask = padded_batch()
    out = model(
        input_ids,
        attention_mask=attention_mask,
        token_type_ids=(torch.arange(input_ids.shape[1]) > 3).long().expand_as(input_ids),
        **labels_for(model_class, input_ids),
    )
    loss = out.loss if model_class is not TransformerEncoderModel else out.last_hidden_state.sum() + out.pooler_output.sum()
    loss.backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert missing == []


def test_gradient_checkpointing_gives_the_same_gradients():
    input_ids, attention_mask = padded_batch()
    labels = labels_for(TransformerEncoderForMaskedLM, input_ids)
    grads = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = TransformerEncoderForMaskedLM(tiny_config()).train()
        if checkpointing:  # transformers 5.23 renamed gradient checkpointing to activation checkpointing
            enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
            enable()
            assert all(layer.gradient_checkpointing for layer in model.model.layers)
        model(input_ids, attention_mask=attention_mask, **labels).loss.backward()
        grads.append({name: p.grad.clone() for name, p in model.named_parameters()})
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], msg=name)


def test_resize_token_embeddings_keeps_tying_and_accepts_new_ids():
    model = TransformerEncoderForMaskedLM(tiny_config())
    model.resize_token_embeddings(120)
    assert model.config.vocab_size == 120
    assert model.lm_head.decoder.weight.shape == (120, 32)
    assert model.lm_head.decoder.bias.shape == (120,)
    assert model.lm_head.decoder.weight is model.model.embeddings.token_embeddings.weight
    out = model(torch.tensor([[1, 119, 5]]))
    assert out.logits.shape == (1, 3, 120)


def test_torch_compile_full_graph_matches_eager():
    model = TransformerEncoderForMaskedLM(tiny_config()).eval()
    input_ids, attention_mask = padded_batch()
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")  # fullgraph: any graph break raises
    with torch.no_grad():
        expected = model(input_ids, attention_mask=attention_mask).logits
        got = compiled(input_ids, attention_mask=attention_mask).logits
    real = attention_mask.bool()  # outputs at padding positions carry no meaning (and differ between paths)
    torch.testing.assert_close(got[real], expected[real], rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------------------------------------
# Bad input: a clear ValueError before any kernel runs
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make_inputs, message",
    [
        (lambda ids, mask: {"input_ids": ids.masked_fill(ids == ids.max(), 99)}, r"\[0, 98\].*vocab_size=99"),
        (lambda ids, mask: {"input_ids": ids.masked_fill(ids == ids.max(), -1)}, "input_ids"),
        (lambda ids, mask: {"input_ids": ids, "attention_mask": mask[:, :-1]}, "attention_mask"),
        (lambda ids, mask: {"input_ids": ids, "attention_mask": mask[:2]}, "attention_mask"),
        (lambda ids, mask: {"input_ids": ids[0]}, r"\(batch, sequence_length\)"),
        (lambda ids, mask: {"input_ids": ids, "inputs_embeds": torch.zeros(3, 9, 32)}, "exactly one"),
        (lambda ids, mask: {}, "exactly one"),
        (lambda ids, mask: {"inputs_embeds": torch.zeros(3, 9, 31)}, "inputs_embeds"),
        (lambda ids, mask: {"input_ids": ids, "token_type_ids": torch.ones_like(ids)}, "type_vocab_size"),
        (lambda ids, mask: {"input_ids": ids, "position_ids": torch.arange(5)[None]}, "position_ids"),
    ],
)
def test_bad_inputs_raise_value_error(make_inputs, message):
    model = TransformerEncoderModel(tiny_config())
    input_ids, attention_mask = padded_batch()
    with pytest.raises(ValueError, match=message):
        model(**make_inputs(input_ids, attention_mask))


def test_sequence_longer_than_learned_positions_raises():
    model = TransformerEncoderModel(tiny_config(position_embedding_type="learned", max_position_embeddings=8))
    with pytest.raises(ValueError, match="learned positions hold 8"):
        model(torch.ones(1, 9, dtype=torch.long))
    model(torch.ones(1, 8, dtype=torch.long))  # the longest allowed


def test_sinusoidal_positions_have_no_length_limit():
    model = TransformerEncoderModel(tiny_config(max_position_embeddings=8)).eval()
    assert torch.isfinite(model(torch.ones(1, 20, dtype=torch.long)).last_hidden_state).all()
