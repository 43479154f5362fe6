"""The tokenizer the training CLI trains: the same for the same text in any process, and as good as the one
`tokenizers`' own WordPiece trainer makes (the two differ only where that trainer breaks ties by chance)."""

import hashlib
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from transformer_encoder.training.data import embedded_corpus
from transformer_encoder.training.tokenizer import SPECIAL_TOKENS, train_tokenizer

VOCAB_SIZE = 4000  # the main job's


@pytest.fixture(scope="module")
def corpus():
    return embedded_corpus()


def tokenizers_own_wordpiece(corpus) -> Tokenizer:
    """The reference: the BERT recipe with `tokenizers`' WordPieceTrainer, trained in one pass."""
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(vocab_size=VOCAB_SIZE, special_tokens=SPECIAL_TOKENS, show_progress=False)
    tokenizer.train_from_iterator((batch["text"] for batch in corpus.iter(batch_size=1000)), trainer)
    return tokenizer


def test_wordpiece_matches_the_tokenizers_trainer_up_to_its_ties(corpus):
    ours = train_tokenizer(corpus, "text", "wordpiece", VOCAB_SIZE, 128)
    theirs = tokenizers_own_wordpiece(corpus)
    vocab, reference = ours.get_vocab(), theirs.get_vocab()
    assert len(vocab) == len(reference) == VOCAB_SIZE
    # Their vocabulary itself moves by a handful of entries from process to process (4 to 8 seen on this corpus).
    assert len(vocab.keys() - reference.keys()) <= 20
    texts = list(corpus["text"])
    our_tokens = sum(map(len, ours(texts, add_special_tokens=False)["input_ids"]))
    their_tokens = sum(len(encoding.ids) for encoding in theirs.encode_batch(texts, add_special_tokens=False))
    assert our_tokens == pytest.approx(their_tokens, rel=1e-3)
    assert ours.unk_token_id not in ours(texts[:50])["input_ids"][0]

    # A plain WordPiece: the special tokens first, then the characters and the continuation pieces, in order.
    backend = ours.backend_tokenizer
    assert backend.model.__class__.__name__ == "WordPiece" and backend.model.continuing_subword_prefix == "##"
    assert [vocab[token] for token in SPECIAL_TOKENS] == list(range(5))
    assert [token.content for token in backend.get_added_tokens_decoder().values()] == SPECIAL_TOKENS
    by_id = sorted(vocab, key=vocab.get)
    characters = [t for t in by_id if len(t) == 1]
    continuations = [t for t in by_id if len(t) == 3 and t.startswith("##")]
    assert by_id[5:5 + len(characters) + len(continuations)] == sorted(characters) + sorted(continuations)
    assert ours.decode(ours("Lambda expressions")["input_ids"], skip_special_tokens=True) == "lambda expressions"


def tokenizer_hashes() -> list[str]:
    """The sha256 of tokenizer.json as trained on the embedded corpus, for each kind of tokenizer."""
    hashes = []
    for kind in ("wordpiece", "bpe"):
        with tempfile.TemporaryDirectory() as folder:
            train_tokenizer(embedded_corpus(), "text", kind, VOCAB_SIZE, 128).save_pretrained(folder)
            hashes.append(hashlib.sha256((Path(folder) / "tokenizer.json").read_bytes()).hexdigest())
    return hashes


def test_the_same_text_trains_the_same_tokenizer_in_every_process():
    """`tokenizers` seeds its hash maps anew in every process: this one and two more."""
    here = tokenizer_hashes()
    for _ in range(2):
        other = subprocess.run(
            [sys.executable, "-c", "from test_tokenizer import tokenizer_hashes; print(*tokenizer_hashes())"],
            cwd=Path(__file__).parent, capture_output=True, text=True, check=True,
        )
        assert other.stdout.split() == here
