"""Tiny, deterministic random-weight Hugging Face checkpoints for tests and the offline demo (no network, < 1 s).

``make_tiny_bert`` writes a random-weight ``BertModel`` (safetensors) plus a fast WordPiece tokenizer learnt from a
small built-in corpus, and optionally the sentence-transformers files (``modules.json``, ``1_Pooling/config.json``,
``sentence_bert_config.json``) so a folder looks like a real sentence-transformers checkpoint.
``make_tiny_cross_encoder`` writes a random-weight ``BertForSequenceClassification`` (one logit per pair, a
reranker) with the same tokenizer.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

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


def _train_tokenizer(vocab_size: int) -> Any:
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


def _write_tokenizer_and_config(
    path: Path, vocab_size: int, max_position: int, hidden: int, layers: int, heads: int
) -> Any:
    """Save the deterministic fast tokenizer into ``path``; return the matching ``BertConfig`` (not yet saved)."""
    from transformers import BertConfig, BertTokenizerFast  # type: ignore[attr-defined]  # a lazy export

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


def _save_model(model: Any, path: Path) -> None:
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # no "Writing model shards" bar in test output
    try:
        model.save_pretrained(str(path), safe_serialization=True)
    finally:
        if bars:
            hf_logging.enable_progress_bar()


# ------------------------------------------------------------------------------------------------------------------
# A tiny decoder-only LLM (Llama family) with a byte-level BPE tokenizer and a chat template, for the generation tests
# ------------------------------------------------------------------------------------------------------------------

DECODER_SPECIAL_TOKENS = ("<s>", "</s>", "<pad>", "<|system|>", "<|user|>", "<|assistant|>")

DECODER_CORPUS = (
    *CORPUS,
    "Streaming sends one token at a time so the reader sees the answer grow.",
    "Large language models generate text one token after another until they stop.",
    "Café, naïve, résumé and jalapeño keep their accents in UTF-8.",
    "東京は日本の首都です。北京是中国的首都。",
    "데이터와 모델은 서버에서 실행됩니다.",
    "Emoji travel as four bytes: 😀 🚀 🎉 👍 and they must never be cut in half.",
    "Привет, мир! Γειά σου κόσμε!",
)

# A ChatML-like template that uses bos_token/eos_token the way Llama-family templates do.
DECODER_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] not in ['system', 'user', 'assistant'] %}"
    "{{ raise_exception('Conversation roles must be system, user or assistant') }}"
    "{% endif %}"
    "{{ '<|' + message['role'] + '|>\\n' + message['content'] | trim + eos_token + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)


def _byte_level_alphabet() -> dict[int, str]:
    """GPT-2's byte -> printable character map (the alphabet of byte-level BPE)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    seen = set(printable)
    chars = list(printable)
    for b in range(256):
        if b not in seen:
            printable.append(b)
            chars.append(256 + len(chars) - len(seen))
    return {b: chr(c) for b, c in zip(printable, chars, strict=True)}


def _train_byte_level_bpe(vocab_size: int) -> Any:
    """A byte-level BPE tokenizer learnt from DECODER_CORPUS, deterministically (ties broken by the pair's text).

    Vocabulary: the special tokens, the 256 byte symbols (in byte order), then merges by frequency. Characters that
    are rare in the corpus (most emoji, CJK) stay split over several byte tokens, which is what incremental
    detokenisation has to cope with.
    """
    from collections import Counter
    from itertools import pairwise

    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

    pre = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    words: Counter[tuple[str, ...]] = Counter()
    for line in DECODER_CORPUS:
        words.update(tuple(w) for w, _ in pre.pre_tokenize_str(line))
    alphabet = _byte_level_alphabet()
    vocab_list = [*DECODER_SPECIAL_TOKENS, *(alphabet[b] for b in range(256))]
    known = set(vocab_list)
    merges: list[tuple[str, str]] = []
    pairs: Counter[tuple[str, str]] = Counter()
    for word, count in words.items():
        for pair in pairwise(word):
            pairs[pair] += count
    while len(vocab_list) < vocab_size and pairs:
        (a, b), count = min(pairs.items(), key=lambda kv: (-kv[1], kv[0]))
        if count < 2:
            break
        merges.append((a, b))
        if a + b not in known:
            vocab_list.append(a + b)
            known.add(a + b)
        for word in [w for w in words if a in w and b in w]:
            n = words.pop(word)
            out: list[str] = []
            i = 0
            while i < len(word):
                if i + 1 < len(word) and word[i] == a and word[i + 1] == b:
                    out.append(a + b)
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            for pair in pairwise(word):  # the pair counts follow the word's new spelling
                pairs[pair] -= n
            for pair in pairwise(out):
                pairs[pair] += n
            words[tuple(out)] += n
        pairs = +pairs  # drop zero counts
    vocab = {token: i for i, token in enumerate(vocab_list)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", vocab["<s>"])]
    )
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in DECODER_SPECIAL_TOKENS])
    return tok


def make_tiny_decoder(
    path: Path,
    *,
    hidden: int = 64,
    layers: int = 2,
    heads: int = 4,
    kv_heads: int = 2,
    vocab_size: int = 512,
    max_position: int = 512,
    seed: int = 0,
) -> Path:
    """Write a tiny random-weight ``LlamaForCausalLM`` with a fast byte-level BPE tokenizer into ``path``.

    The folder looks like a real Llama-family chat checkpoint: ``config.json``, ``model.safetensors``,
    ``generation_config.json`` (bos/eos/pad), ``tokenizer.json`` and ``tokenizer_config.json`` with BOS ``<s>``,
    EOS ``</s>``, PAD ``<pad>`` and a jinja2 ``chat_template`` (ChatML-like, using ``bos_token``/``eos_token``).
    The tokenizer adds BOS when encoding with special tokens.

    Weights are drawn with std 0.1 (not 0.02), so next-token logits are well separated and greedy decoding is
    stable against float round-off between batched and unbatched runs. The output-layer rows of the special tokens
    and of tokens that are not valid UTF-8 on their own (lone bytes of multi-byte characters) or hold control
    characters are zeroed, so greedy
    text from this random model is readable and does not end early; such tokens stay in the vocabulary (the
    detokenisation tests need them) and sampling can still pick them. Deterministic for a given ``seed``.
    """
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tok = _train_byte_level_bpe(vocab_size - 8)  # room for nothing else: vocab_size is the model's embedding size
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        model_max_length=max_position,
        clean_up_tokenization_spaces=False,
    )
    fast.save_pretrained(str(path))
    # the chat template lives in tokenizer_config.json (as in most Hub checkpoints), not in chat_template.jinja
    config_file = path / "tokenizer_config.json"
    tok_config = json.loads(config_file.read_text(encoding="utf-8"))
    tok_config["chat_template"] = DECODER_CHAT_TEMPLATE
    tok_config["tokenizer_class"] = "PreTrainedTokenizerFast"
    tok_config["add_bos_token"] = True
    config_file.write_text(json.dumps(tok_config, indent=2, ensure_ascii=False), encoding="utf-8")
    (path / "chat_template.jinja").unlink(missing_ok=True)

    ids = {t: tok.token_to_id(t) for t in DECODER_SPECIAL_TOKENS}
    config = LlamaConfig(  # type: ignore[call-arg]  # rope_theta: accepted, not typed
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=max_position,
        initializer_range=0.1,
        rms_norm_eps=1e-6,
        rope_theta=10000.0,
        tie_word_embeddings=False,
        bos_token_id=ids["<s>"],
        eos_token_id=ids["</s>"],
        pad_token_id=ids["<pad>"],
    )
    unreadable = [i for i in range(vocab_size) if i >= tok.get_vocab_size() or i in ids.values()]
    byte_of = {c: b for b, c in _byte_level_alphabet().items()}
    for token, i in tok.get_vocab().items():
        if i in ids.values():
            continue
        try:
            text = bytes(byte_of[c] for c in token).decode("utf-8")
        except UnicodeDecodeError:
            unreadable.append(i)
            continue
        if any(not c.isprintable() and c not in "\n" for c in text):
            unreadable.append(i)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config).eval()
        with torch.no_grad():
            model.lm_head.weight[sorted(set(unreadable))] = 0.0
    model.generation_config = GenerationConfig(
        bos_token_id=ids["<s>"], eos_token_id=ids["</s>"], pad_token_id=ids["<pad>"], do_sample=False
    )
    _save_model(model, path)
    return path


def make_tiny_lora(base_dir: Path, out_dir: Path, seed: int, r: int = 4) -> Path:
    """Write a PEFT LoRA adapter (``adapter_config.json`` + ``adapter_model.safetensors``) for the tiny decoder in
    ``base_dir`` into ``out_dir`` and return ``out_dir``.

    LoRA on the attention query/value and the MLP down projections, rank ``r``. Both A and B are drawn (std 0.3,
    from ``seed``), B non-zero unlike a freshly initialised adapter, so the adapted model's greedy text differs from
    the base model's and from another seed's. ``base_model_name_or_path`` is the absolute base folder.
    """
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base_dir, out_dir = Path(base_dir).resolve(), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    base = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
    config = LoraConfig(r=r, lora_alpha=2 * r, target_modules=["q_proj", "v_proj", "down_proj"], lora_dropout=0.0,
                        bias="none", task_type="CAUSAL_LM")
    with warnings.catch_warnings():
        # peft 0.21 reads transformers 5's deprecated `is_gradient_checkpointing` while wrapping the model: its
        # FutureWarning is peft's to fix, and printed on every build of a random adapter it only says that
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        model = get_peft_model(base, config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_A" in name or "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.3)
    model.peft_config["default"].base_model_name_or_path = str(base_dir)
    model.save_pretrained(str(out_dir))
    return out_dir
