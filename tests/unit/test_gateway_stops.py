"""The gateway's stop strings over streamed text (gateway.generation.StopScanner): OpenAI's semantics whatever the
runtime did: the text ends before the first stop string, which is never sent."""

from __future__ import annotations

import pytest

pytest.importorskip("starlette", reason="the gateway needs the `gateway` extra")

from tritonforge.gateway.generation import StopScanner


def _scan(pieces: list[str], stops: list[str]) -> tuple[list[str], bool]:
    scanner = StopScanner(stops)
    sent = []
    for piece in pieces:
        sent.append(scanner.feed(piece))
        if scanner.hit:
            return sent, True
    sent.append(scanner.rest())
    return sent, False


@pytest.mark.parametrize(
    ("pieces", "stops", "text", "hit"),
    [
        (["Hello", " wor", "ld. Bye"], ["."], "Hello world", True),
        (["Hel", "lo\n", "\nUser: hi"], ["\n\nUser:"], "Hello", True),  # split over three pieces
        (["abc", "def"], ["xyz"], "abcdef", False),  # held back, then sent at the end
        (["one END", " two"], ["END", "one"], "", True),  # the earliest of several
        (["a stop", "word"], ["stopword"], "a ", True),
        (["ok"], [], "ok", False),
        (["héllo wörld"], ["ö"], "héllo w", True),  # characters, not bytes
    ],
)
def test_the_text_ends_before_the_first_stop_string(pieces: list[str], stops: list[str], text: str, hit: bool) -> None:
    sent, was_hit = _scan(pieces, stops)
    assert "".join(sent) == text and was_hit is hit


def test_only_the_longest_stop_strings_length_less_one_is_held_back() -> None:
    scanner = StopScanner(["###", "#"])
    assert scanner.feed("Hello world") == "Hello wor"  # the last two characters could begin "###"
    assert scanner.feed("!") == "l"
    assert scanner.rest() == "d!"


def test_the_runtime_that_already_cut_leaves_nothing_to_cut() -> None:
    """The LLM API ends its text before the stop string: the scanner passes it on whole."""
    sent, hit = _scan(["The answer", " is 4"], ["\n"])
    assert "".join(sent) == "The answer is 4" and not hit


@pytest.mark.parametrize(("pieces", "stops", "sent"), [
    # a character cut by max_tokens in the middle of its bytes decodes to U+FFFD at the end: not sent, as vLLM
    (["ab", "c\ufffd", "\ufffdd", "e\ufffd"], [], ["ab", "c", "\ufffd\ufffdd", "e"]),
    (["👋🏽🔥\ufffd"], [], ["👋🏽🔥"]),
    (["x\ufffd", "y. rest"], ["."], ["x", "\ufffdy"]),  # held back, then sent once text follows it
])
def test_a_trailing_replacement_character_is_never_sent(pieces: list[str], stops: list[str], sent: list[str]) -> None:
    import asyncio
    from typing import Any

    from tritonforge.gateway.generation import _Generation

    class Client:
        def stream_text(self, *args: Any, **kwargs: Any) -> Any:
            async def stream() -> Any:
                for piece in pieces:
                    yield piece

            return stream()

    async def run() -> list[str]:
        generation = _Generation(Client(), "llm", {}, timeout=None, engine_model=None, stops=stops)  # type: ignore[arg-type]
        return [piece async for piece in generation.pieces()]

    assert asyncio.run(run()) == sent
