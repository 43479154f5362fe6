"""A tokenizer trained on the training text with `tokenizers`, saved so that `AutoTokenizer` loads it, and the same
for the same text in any process.

`tokenizers`' WordPiece trainer (its BPE trainer with a `##` continuation prefix) numbers the continuation pieces
(`##a`, `##b`, …) in the order it meets them while walking its word counts, a hash map seeded anew in every
process, and it breaks ties between equally frequent merges by those numbers (huggingface/tokenizers#1794). So the
same text trains a vocabulary that differs in a few entries, and in the numbering of hundreds, from one process to
the next. We train in two passes: the first finds the pieces the text starts from (its characters, and the
continuation pieces); the second hands them to the trainer as its first entries, characters then continuation
pieces, each in code-point order. Every number, and so every tie-break, is then fixed, and the result is still a
plain `tokenizers` WordPiece. Byte-level BPE needs no such help: its pieces are the 256 bytes, numbered in order.
"""

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]  # [PAD] = 0, the model's pad_token_id


def train_tokenizer(
    dataset, text_column: str, kind: str, vocab_size: int, model_max_length: int
) -> PreTrainedTokenizerFast:
    """WordPiece as BERT (lower-cased, split on whitespace and punctuation) or byte-level BPE as RoBERTa (no
    unknown characters), with [CLS] … [SEP] added around every sequence, trained on `dataset[text_column]` (a
    `datasets` Dataset or IterableDataset, read once for BPE and twice for WordPiece)."""

    def texts():
        return (batch[text_column] for batch in dataset.iter(batch_size=1000))

    tokenizer = train_wordpiece(texts, vocab_size) if kind == "wordpiece" else train_byte_level_bpe(texts, vocab_size)
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=model_max_length,
    )


def train_wordpiece(texts, vocab_size: int) -> Tokenizer:
    """`texts()` gives a fresh iterator over batches of strings; it is called twice (see the module docstring)."""
    first = bert_wordpiece()
    first.train_from_iterator(texts(), wordpiece_trainer(vocab_size=0, show_progress=False))  # no merge
    starting_pieces = first.get_vocab(with_added_tokens=False).keys() - set(SPECIAL_TOKENS)
    fixed_order = sorted(starting_pieces, key=lambda piece: (piece.startswith("##"), piece))
    trained = bert_wordpiece()
    trained.train_from_iterator(texts(), wordpiece_trainer(vocab_size, fixed_order))
    # The starting pieces were trainer "special tokens" only to fix their numbers: rebuild with them as plain pieces.
    tokenizer = bert_wordpiece(trained.get_vocab(with_added_tokens=False))
    tokenizer.add_special_tokens(SPECIAL_TOKENS)
    return tokenizer


def bert_wordpiece(vocab: dict[str, int] | None = None) -> Tokenizer:
    tokenizer = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    return tokenizer


def wordpiece_trainer(vocab_size: int, first_pieces=(), show_progress=True) -> trainers.WordPieceTrainer:
    return trainers.WordPieceTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS + list(first_pieces), show_progress=show_progress
    )


def train_byte_level_bpe(texts, vocab_size: int) -> Tokenizer:
    tokenizer = Tokenizer(models.BPE(unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(texts(), trainer=trainer)
    return tokenizer
