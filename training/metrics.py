"""Evaluation metrics, computed here: `evaluate.load(...)` fetches metric code from the Hub at run time."""

import re
import string
from collections import Counter


def accuracy(predictions, references) -> float:
    pairs = list(zip(predictions, references, strict=True))
    return sum(p == r for p, r in pairs) / max(len(pairs), 1)


def entity_spans(tags: list[str]) -> set[tuple[str, int, int]]:
    """(type, start, end) of every entity in an IOB2 / IOB1 tag sequence, as conlleval reads it: an entity starts
    at B-X, or at I-X after a tag of another type, and runs over the I-X that follow."""
    spans, start, kind = set(), None, None
    for i, tag in enumerate(list(tags) + ["O"]):
        prefix, _, tag_kind = tag.partition("-")
        continues = prefix == "I" and tag_kind == kind
        if start is not None and not continues:
            spans.add((kind, start, i))
            start, kind = None, None
        if prefix in ("B", "I") and not continues:
            start, kind = i, tag_kind
    return spans


def entity_scores(predicted: list[list[str]], gold: list[list[str]]) -> dict[str, float]:
    """Entity-level micro precision, recall and F1 over all sentences, and F1 per entity type (an entity counts
    only if its type and both boundaries match), plus token accuracy."""
    true_positives, predicted_count, gold_count = Counter(), Counter(), Counter()
    for p_tags, g_tags in zip(predicted, gold, strict=True):
        p_spans, g_spans = entity_spans(p_tags), entity_spans(g_tags)
        for spans, counter in ((p_spans, predicted_count), (g_spans, gold_count), (p_spans & g_spans, true_positives)):
            counter.update(kind for kind, _, _ in spans)

    def f1(tp, n_predicted, n_gold):
        precision = tp / n_predicted if n_predicted else 0.0
        recall = tp / n_gold if n_gold else 0.0
        return precision, recall, (2 * precision * recall / (precision + recall) if precision + recall else 0.0)

    precision, recall, overall = f1(sum(true_positives.values()), sum(predicted_count.values()), sum(gold_count.values()))
    scores = {"precision": precision, "recall": recall, "f1": overall}
    for kind in sorted(gold_count | predicted_count):
        scores[f"f1_{kind}"] = f1(true_positives[kind], predicted_count[kind], gold_count[kind])[2]
    tokens = [(p, g) for ps, gs in zip(predicted, gold) for p, g in zip(ps, gs)]
    scores["accuracy"] = accuracy(*zip(*tokens)) if tokens else 0.0
    return scores


def regression_scores(predictions, references) -> dict[str, float]:
    """Mean squared error, and Pearson's and Spearman's correlations (GLUE's STS-B metrics)."""
    pairs = list(zip(predictions, references, strict=True))
    mse = sum((p - r) ** 2 for p, r in pairs) / max(len(pairs), 1)
    if len(pairs) < 2:
        return {"mse": mse}
    from scipy import stats  # here, not at the top: it adds about a second to every start of the training CLI

    return {
        "mse": mse,
        "pearson": float(stats.pearsonr(predictions, references).statistic),
        "spearmanr": float(stats.spearmanr(predictions, references).statistic),
    }


def normalize_answer(text: str) -> str:
    """SQuAD's official normalisation: lower case, no punctuation, no articles (a, an, the), single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    return " ".join(re.sub(r"\b(a|an|the)\b", " ", text).split())


def answer_f1(prediction: str, gold: str) -> float:
    """Token-level F1 between two answers after normalisation; an empty answer (no answer) matches only another."""
    predicted, expected = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not predicted or not expected:
        return float(predicted == expected)
    common = sum((Counter(predicted) & Counter(expected)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(expected)
    return 2 * precision * recall / (precision + recall)


def squad_scores(predictions: dict[str, str], references: dict[str, list[str]]) -> dict[str, float]:
    """Exact match and F1 in percent, as the official SQuAD v1.1/v2.0 evaluation computes them: each question
    scores its best match over its gold answers; a question without any (v2) expects the empty answer."""
    exact, f1 = [], []
    for qid, golds in references.items():
        golds = [g for g in golds if normalize_answer(g)] or [""]
        prediction = predictions[qid]
        exact.append(max(float(normalize_answer(prediction) == normalize_answer(g)) for g in golds))
        f1.append(max(answer_f1(prediction, g) for g in golds))
    n = max(len(exact), 1)
    return {"exact_match": 100 * sum(exact) / n, "f1": 100 * sum(f1) / n}
