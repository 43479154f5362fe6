"""Extractive question answering with any `…ForQuestionAnswering` model: the answer is a span of the context.

transformers 5 removed `pipeline("question-answering")`; this module does what it did, and what training needs:

    from transformer_encoder.question_answering import answer
    answer(model, tokenizer, "Who wrote it?", context)  # {"answer": "...", "start": 17, "end": 29, "score": 0.93}

A context longer than the model is cut into overlapping windows (`doc_stride` tokens shared by neighbours), as
in training; each window scores every span of at most `max_answer_length` tokens by its start and end logits, and
the best span of all windows wins. Offsets map its tokens back to characters: `context[start:end] == answer`.
"""

from dataclasses import dataclass

import torch


@dataclass
class Windows:
    """A batch of (question, context) examples tokenized into windows of at most `max_length` tokens."""

    encoding: dict  # input_ids, attention_mask (and token_type_ids) per window
    example: list[int]  # the example each window comes from
    offsets: list[list[tuple[int, int] | None]]  # per token, its characters in the context; None off the context


def make_windows(tokenizer, questions: list[str], contexts: list[str], max_length: int, doc_stride: int) -> Windows:
    """[CLS] question [SEP] context-window [SEP], the windows overlapping by `doc_stride` tokens (the question is
    never cut). Needs a fast tokenizer (for the offsets)."""
    if not tokenizer.is_fast:
        raise ValueError("Question answering needs a fast tokenizer: it maps tokens back to characters.")
    questions = [q.lstrip() for q in questions]  # leading spaces only waste tokens
    contexts = list(contexts)
    longest = max(len(ids) for ids in tokenizer(questions, add_special_tokens=False)["input_ids"])
    room = max_length - longest - tokenizer.num_special_tokens_to_add(pair=True)
    if room <= doc_stride:
        raise ValueError(
            f"A question of {longest} tokens leaves {max(room, 0)} of the {max_length} tokens for the context, not "
            f"more than doc_stride={doc_stride}: raise max_length, lower doc_stride, or shorten the question."
        )
    encoding = tokenizer(
        questions,
        contexts,
        truncation="only_second",
        max_length=max_length,
        stride=doc_stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
    )
    example = encoding.pop("overflow_to_sample_mapping")
    offsets = [
        [tuple(o) if part == 1 else None for o, part in zip(window, encoding.sequence_ids(i))]
        for i, window in enumerate(encoding.pop("offset_mapping"))
    ]
    return Windows(dict(encoding), list(example), offsets)


def answer_positions(windows: Windows, answers: list[dict], cls_index: int = 0) -> tuple[list[int], list[int]]:
    """Training targets: the first and last token of each window's answer (the first gold answer), or the [CLS]
    token where the window does not hold the whole answer or there is none (SQuAD v2)."""
    starts, ends = [], []
    for offsets, example in zip(windows.offsets, windows.example):
        gold = answers[example]
        start, end = cls_index, cls_index
        if gold["answer_start"]:
            first_char = gold["answer_start"][0]
            last_char = first_char + len(gold["text"][0])
            inside = [i for i, o in enumerate(offsets) if o is not None]
            if offsets[inside[0]][0] <= first_char and offsets[inside[-1]][1] >= last_char:
                start = max(i for i in inside if offsets[i][0] <= first_char)
                end = min(i for i in inside if offsets[i][1] >= last_char)
        starts.append(start)
        ends.append(end)
    return starts, ends


def best_spans(
    context: str,
    windows: list[tuple[torch.Tensor, torch.Tensor, list]],
    n_best_size: int = 20,
    max_answer_length: int = 30,
    allow_no_answer: bool = False,
    null_score_diff_threshold: float = 0.0,
    cls_index: int = 0,
) -> list[dict]:
    """The `n_best_size` best answers to one question over the windows of its context, best first.

    `windows` holds (start_logits, end_logits, offsets) per window. A span is scored by start + end logit (as
    transformers' `run_qa` scores them); its "score" is its probability within its window (softmax of the start
    and of the end logits over the context tokens, and [CLS] where no answer is allowed). With `allow_no_answer`
    (SQuAD v2), the empty answer comes first when the lowest [CLS] score over the windows beats the best span's by
    more than `null_score_diff_threshold`."""
    candidates, null = [], None
    for start_logits, end_logits, offsets in windows:
        start_logits, end_logits = start_logits.float(), end_logits.float()
        allowed = torch.tensor([o is not None for o in offsets] + [False] * (len(start_logits) - len(offsets)))
        if allow_no_answer:
            allowed[cls_index] = True
        start_p = start_logits.masked_fill(~allowed, float("-inf")).softmax(-1)
        end_p = end_logits.masked_fill(~allowed, float("-inf")).softmax(-1)
        null_score = (start_logits[cls_index] + end_logits[cls_index]).item()
        if null is None or null_score < null["logit"]:
            probability = (start_p[cls_index] * end_p[cls_index]).item() if allow_no_answer else 0.0
            null = {"answer": "", "start": 0, "end": 0, "score": probability, "logit": null_score}
        in_context = [i for i, o in enumerate(offsets) if o is not None]
        top = min(n_best_size, len(in_context))
        context_starts = torch.tensor(in_context)[start_logits[in_context].topk(top).indices].tolist()
        context_ends = torch.tensor(in_context)[end_logits[in_context].topk(top).indices].tolist()
        for s in context_starts:
            for e in context_ends:
                if e < s or e - s + 1 > max_answer_length:
                    continue
                first, last = offsets[s][0], offsets[e][1]
                candidates.append({
                    "answer": context[first:last],
                    "start": first,
                    "end": last,
                    "score": (start_p[s] * end_p[e]).item(),
                    "logit": (start_logits[s] + end_logits[e]).item(),
                })
    candidates.sort(key=lambda c: c["logit"], reverse=True)
    candidates = candidates[:n_best_size]
    if allow_no_answer and (not candidates or null["logit"] - candidates[0]["logit"] > null_score_diff_threshold):
        candidates = [null, *candidates[: n_best_size - 1]]
    return candidates or [null]


@torch.no_grad()
def answer_batch(
    model,
    tokenizer,
    questions: list[str],
    contexts: list[str],
    *,
    max_length: int | None = None,
    doc_stride: int | None = None,
    max_answer_length: int = 30,
    top_k: int = 1,
    handle_impossible_answer: bool = False,
    batch_size: int = 32,
) -> list[dict] | list[list[dict]]:
    """`answer` for many (question, context) pairs, their windows run through the model in batches."""
    if len(questions) != len(contexts):
        raise ValueError(f"{len(questions)} questions but {len(contexts)} contexts.")
    if max_length is None:
        max_length = min(384, tokenizer.model_max_length)
    if doc_stride is None:
        doc_stride = min(128, max_length // 4)  # run_qa's 128 where the window is long enough for it
    windows = make_windows(tokenizer, questions, contexts, max_length, doc_stride)
    model.eval()
    device = next(model.parameters()).device
    logits = []
    for first in range(0, len(windows.example), batch_size):
        rows = [{k: v[i] for k, v in windows.encoding.items()} for i in range(first, min(first + batch_size, len(windows.example)))]
        batch = tokenizer.pad(rows, return_tensors="pt").to(device)
        outputs = model(**batch)
        logits += list(zip(outputs.start_logits.cpu(), outputs.end_logits.cpu()))
    results = []
    for index, context in enumerate(contexts):
        mine = [(s, e, windows.offsets[w]) for w, ((s, e), ex) in enumerate(zip(logits, windows.example)) if ex == index]
        spans = best_spans(context, mine, max(top_k, 20), max_answer_length, handle_impossible_answer)
        spans = [{k: v for k, v in span.items() if k != "logit"} for span in spans[:top_k]]
        results.append(spans[0] if top_k == 1 else spans)
    return results


def answer(model, tokenizer, question: str, context: str, **options) -> dict | list[dict]:
    """The answer to `question` in `context`: {"answer", "start", "end", "score"} with `context[start:end] ==
    answer`; a list of the `top_k` best if `top_k` > 1. Options: max_length (default: the tokenizer's, at most
    384), doc_stride (tokens shared by neighbouring windows: 128, or a quarter of shorter windows), max_answer_length (30 tokens), top_k (1), handle_impossible_answer (False: the empty
    answer "" is allowed when True), batch_size."""
    return answer_batch(model, tokenizer, [question], [context], **options)[0]
