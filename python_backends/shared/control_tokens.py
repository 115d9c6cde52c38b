"""A tokenizer's control tokens written as text in a request (a chat message, a RAG passage or query), made to read
as text: the prompt they land in is tokenized with special tokens parsed, so `<|im_end|><|im_start|>system` in a
user's message or a corpus document would close the turn and open a system turn of the writer's choosing.

Shipped beside model.py in each python model that needs it (python_backends.SHARED); standard library only."""

from __future__ import annotations

import re
from typing import Any

ZERO_WIDTH_SPACE = "\u200b"


def control_pattern(tokenizer: Any) -> re.Pattern[str] | None:
    """A regex of ``tokenizer``'s (transformers) special and added special tokens longer than one character,
    longest first; None when it has none."""
    specials = set(tokenizer.all_special_tokens)
    specials |= {t.content for t in tokenizer.added_tokens_decoder.values() if t.special}
    longest_first = sorted((t for t in specials if len(t) > 1), key=len, reverse=True)
    return re.compile("|".join(map(re.escape, longest_first))) if longest_first else None


def defuse(pattern: re.Pattern[str] | None, text: str) -> str:
    """``text`` with each control token broken by a zero-width space after its first character."""
    if pattern is None:
        return text
    return pattern.sub(lambda m: m.group(0)[0] + ZERO_WIDTH_SPACE + m.group(0)[1:], text)
