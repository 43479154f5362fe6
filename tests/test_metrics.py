import pytest

from transformer_encoder.training.metrics import accuracy, entity_scores, entity_spans


def test_accuracy():
    assert accuracy([1, 0, 1, 1], [1, 1, 1, 0]) == 0.5


@pytest.mark.parametrize(
    "tags, spans",
    [
        (["B-PER", "I-PER", "O", "B-LOC"], {("PER", 0, 2), ("LOC", 3, 4)}),
        (["B-PER", "B-PER", "I-PER"], {("PER", 0, 1), ("PER", 1, 3)}),  # B starts a new entity
        (["I-ORG", "I-ORG", "O"], {("ORG", 0, 2)}),  # IOB1: I after O starts one
        (["B-PER", "I-LOC", "I-LOC"], {("PER", 0, 1), ("LOC", 1, 3)}),  # a type change starts one
        (["O", "O"], set()),
    ],
)
def test_entity_spans_read_as_conlleval(tags, spans):
    assert entity_spans(tags) == spans


def test_entity_scores_by_hand():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    predicted = [["B-PER", "I-PER", "O", "O"], ["B-ORG", "B-LOC"]]
    # gold: PER, LOC, ORG; predicted: PER, ORG, LOC(wrong place); correct: PER, ORG
    scores = entity_scores(predicted, gold)
    assert scores["precision"] == pytest.approx(2 / 3)
    assert scores["recall"] == pytest.approx(2 / 3)
    assert scores["f1"] == pytest.approx(2 / 3)
    assert scores["f1_PER"] == 1.0 and scores["f1_ORG"] == 1.0 and scores["f1_LOC"] == 0.0
    assert scores["accuracy"] == pytest.approx(4 / 6)
