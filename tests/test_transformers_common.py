"""transformers' own common model and config tests (`ModelTesterMixin`, `ConfigTester`), run against our classes.

The mixin recognises task heads by name from the library's Auto mappings, which do not hold ours: labels and
the list of trainable heads are supplied here instead.
"""

import unittest

import pytest
import torch
import transformers_harness

import transformer_encoder
from transformer_encoder import (
    TransformerEncoderConfig,
    TransformerEncoderForMaskedLM,
    TransformerEncoderForPreTraining,
    TransformerEncoderForQuestionAnswering,
    TransformerEncoderForSequenceClassification,
    TransformerEncoderForTokenClassification,
    TransformerEncoderModel,
)

try:
    test_modeling_common, test_configuration_common = transformers_harness.load()
except Exception as error:  # no registry reachable: nothing to run the harness with
    pytest.skip(f"transformers' test harness could not be fetched: {error}", allow_module_level=True)

ModelTesterMixin = test_modeling_common.ModelTesterMixin
ids_tensor = test_modeling_common.ids_tensor
random_attention_mask = test_modeling_common.random_attention_mask
ConfigTester = test_configuration_common.ConfigTester

HEADS_WITH_LABELS = tuple(head for head in transformer_encoder.HEADS.values() if head is not TransformerEncoderModel)


class TransformerEncoderModelTester:
    def __init__(self, parent, batch_size=13, seq_length=7, **config_overrides):
        self.parent = parent
        self.batch_size = batch_size
        self.seq_length = seq_length
        self.is_training = True
        self.vocab_size = 99
        self.hidden_size = 32
        self.num_hidden_layers = 2
        self.num_attention_heads = 4
        self.num_labels = 3
        self.config_overrides = config_overrides

    def get_config(self):
        kwargs = dict(
            vocab_size=self.vocab_size,
            hidden_size=self.hidden_size,
            num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads,
            intermediate_size=37,
            hidden_act="gelu",
            max_position_embeddings=64,
            type_vocab_size=2,
            num_labels=self.num_labels,
        )
        return TransformerEncoderConfig(**{**kwargs, **self.config_overrides})

    def prepare_config_and_inputs_for_common(self):
        input_ids = ids_tensor([self.batch_size, self.seq_length], self.vocab_size)
        attention_mask = random_attention_mask([self.batch_size, self.seq_length])
        return self.get_config(), {"input_ids": input_ids, "attention_mask": attention_mask}


class TransformerEncoderCommonTest(ModelTesterMixin, unittest.TestCase):
    all_model_classes = (
        TransformerEncoderModel,
        TransformerEncoderForMaskedLM,
        TransformerEncoderForPreTraining,
        TransformerEncoderForSequenceClassification,
        TransformerEncoderForTokenClassification,
        TransformerEncoderForQuestionAnswering,
    )
    test_resize_embeddings = True
    test_can_init_all_missing_weights_before_2023 = True
    config_overrides = {}

    def setUp(self):
        self.model_tester = TransformerEncoderModelTester(self, **self.config_overrides)
        self.config_tester = ConfigTester(
            self, config_class=TransformerEncoderConfig, hidden_size=36, num_attention_heads=4
        )

    def test_config(self):
        self.config_tester.run_common_tests()

    def _prepare_for_class(self, inputs_dict, model_class, return_labels=False):
        inputs_dict = super()._prepare_for_class(inputs_dict, model_class, return_labels=return_labels)
        if return_labels:
            batch, seq = self.model_tester.batch_size, self.model_tester.seq_length
            if model_class in (TransformerEncoderForMaskedLM, TransformerEncoderForPreTraining):
                inputs_dict["labels"] = torch.zeros(batch, seq, dtype=torch.long)
            elif model_class is TransformerEncoderForSequenceClassification:
                inputs_dict["labels"] = torch.zeros(batch, dtype=torch.long)
            elif model_class is TransformerEncoderForTokenClassification:
                inputs_dict["labels"] = torch.zeros(batch, seq, dtype=torch.long)
            elif model_class is TransformerEncoderForQuestionAnswering:
                inputs_dict["start_positions"] = torch.zeros(batch, dtype=torch.long)
                inputs_dict["end_positions"] = torch.zeros(batch, dtype=torch.long)
        return inputs_dict

    def _only_heads_with_labels(self):
        """The training tests need a loss: the base model has none (the mixin skips it by its library name)."""
        self.all_model_classes = HEADS_WITH_LABELS

    def test_training(self):
        self._only_heads_with_labels()
        super().test_training()

    def check_training_gradient_checkpointing(self, gradient_checkpointing_kwargs=None):
        self._only_heads_with_labels()
        super().check_training_gradient_checkpointing(gradient_checkpointing_kwargs)


class TransformerEncoderRotaryPreNormCommonTest(TransformerEncoderCommonTest):
    """The same suite over the other positions and norm placement, with a gated feed-forward network."""

    config_overrides = {"position_embedding_type": "rotary", "norm_first": True, "hidden_act": "geglu"}

    def test_config(self):
        self.skipTest("config checks do not depend on these options: run once above")


class TransformerEncoderLearnedCommonTest(TransformerEncoderRotaryPreNormCommonTest):
    config_overrides = {"position_embedding_type": "learned"}
