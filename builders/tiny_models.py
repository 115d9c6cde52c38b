"""Tiny, deterministic random-weight Hugging Face checkpoints for tests and the offline demo (no network, < 1 s).

``make_tiny_bert`` writes a random-weight ``BertModel`` (safetensors) plus a fast WordPiece tokenizer learnt from a
small built-in corpus, and optionally the sentence-transformers files (``modules.json``, ``1_Pooling/config.json``,
``sentence_bert_config.json``) so a folder looks like a real sentence-transformers checkpoint.
``make_tiny_cross_encoder`` writes a random-weight ``BertForSequenceClassification`` (one logit per pair, a
reranker) with the same tokenizer.
"""

from __future__ import annotations

import json
from pathlib import Path

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")

CORPUS = (
    "The quick brown fox jumps over the lazy dog.",
    "A model repository holds one folder per model with a config and numbered versions.",
    "Triton serves many models at once on the same GPU or CPU.",
    "Sentence embeddings map text to vectors so that similar meanings are close together.",
    "The weather today is sunny with a light breeze from the west.",
    "She sold sea shells by the sea shore while the tide came in.",
    "Dynamic batching groups requests that arrive close together in time.",
    "Tokenizers split words into smaller pieces called tokens.",
    "An encoder reads the whole input and produces one vector per token.",
    "Mean pooling averages the token vectors, ignoring the padding positions.",
    "Hello world! How are you doing this fine morning?",
    "Numbers like 1, 2, 3, 42 and 2024 also appear in text.",
    "Machine learning models are trained on data and evaluated on held out examples.",
    "Please send the report before the meeting on Friday afternoon.",
    "Cats and dogs are common pets in many homes around the world.",
    "The library opens at nine and closes at five every weekday.",
    "Water boils at one hundred degrees at sea level.",
    "He read the book in one evening because the story was so good.",
    "Quantisation stores weights with fewer bits to save memory and time.",
    "Export the network to ONNX and check that the outputs still agree.",
)


def _train_tokenizer(vocab_size: int):
    """A WordPiece tokenizer whose vocabulary is learnt from CORPUS, deterministically.

    ``tokenizers``' WordPieceTrainer breaks frequency ties in hash-map order, so its vocabulary (and the ids)
    change from run to run. Here the corpus goes through the same BERT normaliser and pre-tokenizer, and the
    vocabulary is: special tokens, every character, every ``##``-continuation character, then whole words by
    frequency, then 2-4 character word starts and ``##`` endings by frequency (ties alphabetical), up to
    ``vocab_size``.
    """
    from collections import Counter

    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    normalizer = normalizers.BertNormalizer(lowercase=True, clean_text=True, handle_chinese_chars=True)
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    words: Counter[str] = Counter()
    for line in CORPUS:
        words.update(w for w, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(line)))
    chars = sorted({c for w in words for c in w})
    vocab_list = [*SPECIAL_TOKENS, *chars, *(f"##{c}" for c in chars)]
    pieces: Counter[str] = Counter()  # then word starts and ##endings of 2-4 characters, for unseen words
    for word, count in words.items():
        for n in range(2, min(len(word), 5)):
            pieces[word[:n]] += count
            pieces["##" + word[-n:]] += count
    for ranked in (words, pieces):
        for token, _count in sorted(ranked.items(), key=lambda kv: (-kv[1], kv[0])):
            if len(vocab_list) >= vocab_size:
                break
            if token not in vocab_list:
                vocab_list.append(token)
    vocab = {token: i for i, token in enumerate(vocab_list)}

    tok = Tokenizer(models.WordPiece(vocab=vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizer
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    tok.decoder = decoders.WordPiece(prefix="##")
    return tok


def make_tiny_bert(
    path: Path,
    *,
    hidden: int = 32,
    layers: int = 2,
    heads: int = 2,
    vocab_size: int = 400,
    max_position: int = 128,
    sentence_transformers: bool = True,
    pooling: str = "mean",
    max_seq_length: int | None = None,
    seed: int = 0,
) -> Path:
    """Write a tiny random BERT checkpoint (model + fast tokenizer) into ``path`` and return ``path``.

    ``pooling`` ("mean" or "cls") and ``max_seq_length`` (default ``max_position``) go into the
    sentence-transformers files when ``sentence_transformers`` is true.
    """
    import torch
    from transformers import BertModel

    if pooling not in ("mean", "cls"):
        raise ValueError(f"pooling must be 'mean' or 'cls', got {pooling!r}")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)

    config = _write_tokenizer_and_config(path, vocab_size, max_position, hidden, layers, heads)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = BertModel(config).eval()  # keep the pooler so AutoModel loads every weight
    _save_model(model, path)

    if sentence_transformers:
        modules = [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
        ]
        (path / "modules.json").write_text(json.dumps(modules, indent=2))
        (path / "1_Pooling").mkdir(exist_ok=True)
        pool_cfg = {
            "word_embedding_dimension": hidden,
            "pooling_mode_cls_token": pooling == "cls",
            "pooling_mode_mean_tokens": pooling == "mean",
            "pooling_mode_max_tokens": False,
            "pooling_mode_mean_sqrt_len_tokens": False,
        }
        (path / "1_Pooling" / "config.json").write_text(json.dumps(pool_cfg, indent=2))
        st_cfg = {"max_seq_length": max_seq_length or max_position, "do_lower_case": False}
        (path / "sentence_bert_config.json").write_text(json.dumps(st_cfg, indent=2))
    return path


def make_tiny_cross_encoder(
    path: Path,
    *,
    hidden: int = 32,
    layers: int = 2,
    heads: int = 2,
    vocab_size: int = 400,
    max_position: int = 128,
    num_labels: int = 1,
    seed: int = 0,
) -> Path:
    """Write a tiny random ``BertForSequenceClassification`` (a reranker: ``num_labels=1``) into ``path``.

    With BERT's usual initialisation (std 0.02) the [CLS] vector barely depends on the input and every pair scores
    about the same, which would make parity and padding checks toothless; here the weights are drawn with std 0.1
    and the classifier with std 1, so scores differ clearly from pair to pair (spread ~0.3) without saturating.
    """
    import torch
    from transformers import BertForSequenceClassification

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    config = _write_tokenizer_and_config(path, vocab_size, max_position, hidden, layers, heads)
    config.num_labels = num_labels
    config.initializer_range = 0.1
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = BertForSequenceClassification(config).eval()
        with torch.no_grad():
            model.classifier.weight.normal_(0.0, 1.0)
            model.classifier.bias.normal_(0.0, 0.5)
    _save_model(model, path)
    return path


def _write_tokenizer_and_config(path: Path, vocab_size: int, max_position: int, hidden: int, layers: int, heads: int):
    """Save the deterministic fast tokenizer into ``path``; return the matching ``BertConfig`` (not yet saved)."""
    from transformers import BertConfig, BertTokenizerFast

    tok = _train_tokenizer(vocab_size)
    fast = BertTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=max_position,
    )
    fast.save_pretrained(str(path))
    return BertConfig(
        vocab_size=tok.get_vocab_size(),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=hidden * 2,
        max_position_embeddings=max_position,
        type_vocab_size=2,
        pad_token_id=tok.token_to_id("[PAD]"),
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )


def _save_model(model, path: Path) -> None:
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # no "Writing model shards" bar in test output
    try:
        model.save_pretrained(str(path), safe_serialization=True)
    finally:
        if bars:
            hf_logging.enable_progress_bar()
