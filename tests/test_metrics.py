import pytest

from transformer_encoder.training.metrics import accuracy, entity_scores, entity_spans, regression_scores


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


@pytest.mark.parametrize(
    "predictions, references, expected",
    [
        # ranks equal the values: Pearson = Spearman = 1 - 6·Σd² / (n(n² - 1)) = 1 - 6·2 / 60
        ([1.0, 2.0, 3.0, 4.0], [1.0, 3.0, 2.0, 4.0], {"mse": 0.5, "pearson": 0.8, "spearmanr": 0.8}),
        # a tie takes the mean rank (1.5, 1.5, 3): Spearman = Pearson of the ranks = 1.5 / sqrt(1.5 · 2);
        # Pearson of the values = 1 / sqrt(2/3 · 2); both √3/2
        ([1.0, 1.0, 2.0], [1.0, 2.0, 3.0], {"mse": 2 / 3, "pearson": 3**0.5 / 2, "spearmanr": 3**0.5 / 2}),
        # Pearson is linear: y = 2x + 1 correlates perfectly; MSE = mean (x + 1)²
        ([0.0, 1.0, 2.0], [1.0, 3.0, 5.0], {"mse": (1 + 4 + 9) / 3, "pearson": 1.0, "spearmanr": 1.0}),
    ],
)
def test_regression_scores(predictions, references, expected):
    assert regression_scores(predictions, references) == pytest.approx(expected)
