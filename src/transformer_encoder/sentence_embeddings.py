"""Sentence embeddings from any encoder checkpoint: pool the token representations into one vector a sentence.

    from transformer_encoder.sentence_embeddings import encode
    vectors = encode(model, tokenizer, ["A man is eating.", "Someone eats."])   # (2, hidden_size), unit length
    similarity = vectors @ vectors.T                                           # cosine similarities

Mean pooling averages the real tokens (padding excluded), as sentence-transformers models such as
all-MiniLM-L6-v2 do; CLS pooling takes the first token.
"""

import torch


def mean_pooling(last_hidden_state: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The average of each row's real-token vectors: (batch, seq, d), (batch, seq) → (batch, d). A row with no
    real token gives zeros, not NaN."""
    mask = attention_mask.unsqueeze(-1).to(last_hidden_state.dtype)
    return (last_hidden_state * mask).sum(1) / mask.sum(1).clamp(min=1e-9)


def cls_pooling(last_hidden_state: torch.Tensor) -> torch.Tensor:
    """The first token's vector ([CLS] / <s>): (batch, seq, d) → (batch, d)."""
    return last_hidden_state[:, 0]


@torch.no_grad()
def encode(
    model,
    tokenizer,
    sentences: list[str],
    pooling: str = "mean",
    normalize: bool = True,
    batch_size: int = 32,
    max_length: int | None = None,
) -> torch.Tensor:
    """One vector per sentence (float32, on the CPU), pooled with "mean" or "cls", L2-normalised if asked."""
    if pooling not in ("mean", "cls"):
        raise ValueError(f"pooling must be 'mean' or 'cls', got {pooling!r}.")
    was_training = model.training
    model.eval()
    vectors = []
    for start in range(0, len(sentences), batch_size):
        batch = tokenizer(sentences[start : start + batch_size], padding=True, truncation=True,
                          max_length=max_length, return_tensors="pt").to(model.device)
        hidden = model(**batch).last_hidden_state
        pooled = mean_pooling(hidden, batch["attention_mask"]) if pooling == "mean" else cls_pooling(hidden)
        vectors.append(pooled.float().cpu())
    model.train(was_training)
    vectors = torch.cat(vectors) if vectors else torch.empty(0, model.config.hidden_size)
    return torch.nn.functional.normalize(vectors, dim=-1) if normalize else vectors
