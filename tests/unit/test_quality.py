"""The quality measures' scoring (tritonforge/quality.py) and the project's question set."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace
from typing import ClassVar

import pytest

from tritonforge.errors import ContextLengthError, InvalidInputError
from tritonforge.quality import (
    RERANK_CANDIDATES,
    QualityError,
    QualityReport,
    Question,
    cites,
    contains_fact,
    evaluate,
    load_questions,
    normalise,
    recall_at,
    report_table,
)

ROOT = Path(__file__).resolve().parents[2]


def test_key_facts_match_whole_words_ignoring_case_punctuation_and_thousands() -> None:
    assert normalise("The Berlin Wall fell in 1989!") == "the berlin wall fell in 1989"
    assert contains_fact("CDs sample audio 44100 times a second.", "44,100")
    assert contains_fact("It flows into the Black-Sea.", "black sea")
    assert not contains_fact("It is six hundred.", "hundred thousand")
    assert not contains_fact("They use a clockwork toy.", "clock")  # whole words only


def test_citations_and_recall() -> None:
    assert cites("Mars is red [astronomy-011].", "astronomy-011")
    assert not cites("Mars is red.", "astronomy-011")
    ranked = [["a", "b", "c"], ["x", "y", "z"], ["c", "a", "b"]]
    assert recall_at(ranked, ["a", "z", "b"], 1) == pytest.approx(1 / 3)
    assert recall_at(ranked, ["a", "z", "b"], 3) == 1.0


def test_the_question_set_points_at_real_passages() -> None:
    questions = load_questions(ROOT / "examples" / "data" / "questions.jsonl")
    passages = {json.loads(line)["id"]: json.loads(line)["text"]
                for line in (ROOT / "examples" / "data" / "corpus.jsonl").read_text().splitlines()}
    assert len(questions) >= 40 and len({q.id for q in questions}) == len(questions)
    for q in questions:
        assert q.passage in passages, q
        assert contains_fact(passages[q.passage], q.key_fact), f"{q.id}: the key fact is not in its passage"


def test_a_bad_question_file_names_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "q.jsonl"
    bad.write_text('{"id": "a", "question": "?", "passage": "p", "key_fact": "f"}\n{"id": "b"}\n')
    with pytest.raises(QualityError, match=r"q\.jsonl:2: .*key_fact"):
        load_questions(bad)


def test_targets_are_judged_not_weakened() -> None:
    report = QualityReport(questions=2, recall={"search": {"recall@3": 0.85}}, key_fact=0.61)
    assert report.met() == {"recall@3": False, "key_fact": True}


# ------------------------------------------------------------------------- found by the quality/bench audit


@pytest.mark.parametrize(
    "answer, fact, expected",
    [
        ("Die Hauptstadt ist 北京.", "北京", True),
        ("首都是北京。", "北京", True),  # no spaces between words: each Han character is a word of its own
        ("首都是南京。", "北京", False),
        ("Столица — Москва.", "Москва", True),
        ("Столица — Санкт-Петербург.", "Москва", False),  # every Cyrillic fact normalised to "" and matched
        ("", "Αθήνα", False),
        ("Η πρωτεύουσα είναι η ΑΘΗΝΑ", "Αθήνα", True),  # accents and case of Greek
        ("They met in Zurich.", "Zürich", True),
        ("They met in ZÜRICH.", "zurich", True),
        ("Straße", "STRASSE", True),  # casefold, not lower
        ("It holds 1000000 rows", "1,000,000", True),
        ("Die Zeit ist ２４ Stunden", "24 stunden", True),  # full-width digits are digits (NFKD)
        ("वह हिन्दी बोलती है", "हिन्दी", True),  # Devanagari vowel signs stay in their word
        ("वह हिन्द बोलती है", "हिन्दी", False),
    ],
)
def test_key_facts_match_in_every_script(answer: str, fact: str, expected: bool) -> None:
    assert contains_fact(answer, fact) is expected


def test_a_fact_with_nothing_to_match_never_matches() -> None:
    assert normalise("—!?") == ""
    assert not contains_fact("any answer at all", "—!?")
    assert not contains_fact("", "")


def test_an_answer_names_the_ids_it_cites_and_those_it_was_not_given() -> None:
    """The demo's 135M decoder cited [weather-007] and [weather-008] with only weather-006 in its prompt (new-user
    audit): RagAnswer says which citations are made up, by the same rule as the quality check's."""
    from tritonforge.clients.generation import RagAnswer, Source, cited_ids

    assert cited_ids("Heat [weather-006]; sound [weather-007, weather-006] [] [ ] not weather-009.") == [
        "weather-006", "weather-007",
    ]
    answer = RagAnswer("Thunder [weather-006] [weather-007; weather-008].", [Source("weather-006", 0.7)], "p", 0)
    assert answer.citations == ["weather-006", "weather-007", "weather-008"]
    assert answer.unsupported_citations == ["weather-007", "weather-008"]
    assert RagAnswer("No citation.", [Source("a", 1.0)], "p", 0).unsupported_citations == []


@pytest.mark.parametrize(
    "answer, passage, expected",
    [
        ("See [p12].", "p1", False),  # a substring of a longer id
        ("See [p1].", "p1", True),
        ("See [P1].", "p1", True),
        ("Both [p3, p1] say so.", "p1", True),
        ("Both [p3; p1] and [p12] say so.", "p1", True),
        ("unlike doc7, this is", "doc7", False),  # mentioned, not cited
        ("[astronomy-011-b]", "astronomy-011", False),
        ("anything [at all]", "", False),  # an empty id was cited by every answer
        ("[]", "", False),
        ("[ ]", " ", False),
    ],
)
def test_a_citation_is_the_whole_id_in_brackets(answer: str, passage: str, expected: bool) -> None:
    assert cites(answer, passage) is expected


@pytest.mark.parametrize(
    "line, message",
    [
        ('{"id": "a", "question": ["what", "is"], "passage": "p", "key_fact": "f"}', "question is an array"),
        ('{"id": "a", "question": "?", "passage": {"x": 1}, "key_fact": "f"}', "passage is an object"),
        ('{"id": "a", "question": "?", "passage": null, "key_fact": "f"}', "passage is null"),
        ('{"id": "a", "question": "?", "passage": "p", "key_fact": 3}', "key_fact is a number"),
        ('{"id": 7, "question": "?", "passage": "p", "key_fact": "f"}', "id is a number"),
        ('{"id": "a", "question": "  ", "passage": "p", "key_fact": "f"}', "question is empty"),
        ('{"id": "a", "question": "?", "passage": "", "key_fact": "f"}', "passage is empty"),
        ('{"id": "a", "question": "?", "passage": "p", "key_fact": "..."}', "key_fact '...' has no letter or digit"),
        ("[1, 2, 3]", "an array, not an object"),
        ('"str"', "a string, not an object"),
        ("{not json", "not JSON"),
    ],
)
def test_a_question_of_the_wrong_type_is_refused_with_its_line_and_field(
    tmp_path: Path, line: str, message: str
) -> None:
    bad = tmp_path / "q.jsonl"
    bad.write_text('{"id": "ok", "question": "?", "passage": "p", "key_fact": "f"}\n\n' + line + "\n")
    with pytest.raises(QualityError, match=rf"q\.jsonl:3: {re.escape(message)}"):
        load_questions(bad)


def test_a_duplicate_id_is_refused_naming_both_lines(tmp_path: Path) -> None:
    bad = tmp_path / "q.jsonl"
    row = '{"id": "a", "question": "?", "passage": "p", "key_fact": "f"}\n'
    bad.write_text(row + row.replace('"a"', '"b"') + row)
    with pytest.raises(QualityError, match=r"q\.jsonl:3: id 'a' is already the id of line 1"):
        load_questions(bad)


def test_max_tokens_is_refused_before_any_request() -> None:
    question = [Question("a", "?", "p", "f")]
    for bad in (0, -1, 1.5, True):
        # port 9 answers nothing: a check made after connecting would fail differently
        with pytest.raises(QualityError, match=r"max_tokens=.* \(--max-tokens\) must be an integer >= 1"):
            evaluate("127.0.0.1:9", question, max_tokens=bad)  # type: ignore[arg-type]


class _FakeClient:
    """A client of a repository with search, search_rerank and rag: records the searches, fails some questions."""

    searches: ClassVar[list[tuple[bool, int | None, int | None]]] = []

    def __init__(self, url: str, timeout: float) -> None:
        pass

    def __enter__(self) -> _FakeClient:
        return self

    def __exit__(self, *_: object) -> None:
        pass

    def is_model_ready(self, name: str) -> bool:
        return True

    def search(self, batch: list[str], top_k: int | None, rerank: bool, top_n: int | None) -> list[list[object]]:
        self.searches.append((rerank, top_k, top_n))
        if "unsearchable" in batch:
            raise InvalidInputError("model 'search': the question cannot be searched")
        return [[SimpleNamespace(id=f"p{i}") for i in range(top_n or top_k or 0)] for _ in batch]

    def rag(self, question: str, max_tokens: int, model: str) -> object:
        if question == "too long":
            raise ContextLengthError("model 'rag': the prompt does not fit the model's context")
        return SimpleNamespace(text="It is 42 [p0].", sources=[SimpleNamespace(id="p0")])


def test_a_failed_rag_question_is_recorded_and_the_others_are_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    import tritonforge.clients

    monkeypatch.setattr(tritonforge.clients, "Client", _FakeClient)
    _FakeClient.searches = []
    questions = [
        Question("a", "q a", "p0", "42"), Question("b", "too long", "p0", "42"), Question("c", "q c", "p0", "7")
    ]
    report = evaluate("127.0.0.1:9", questions)
    assert [a["id"] for a in report.answers] == ["a", "c"]
    assert report.failures == [
        {"id": "b", "error": "model 'rag': the prompt does not fit the model's context", "pipeline": "rag"}
    ]
    assert report.key_fact == 0.5 and report.cites_passage == 1.0 and report.passage_given == 1.0
    data = report.as_dict()
    assert data["failed"] == 1 and data["failures"][0]["id"] == "b"
    # the reranker chooses 5 of RERANK_CANDIDATES: asked for 5 candidates, it could only reorder search's 5
    assert (False, 5, None) in _FakeClient.searches
    assert (True, RERANK_CANDIDATES, 5) in _FakeClient.searches and RERANK_CANDIDATES > 5


def test_a_failed_search_question_is_a_recorded_miss_and_the_run_goes_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """A failing search batch ended the whole run; now the batch is asked again one question at a time, and the
    question that still fails counts as a miss in that pipeline's recall (which stays over the whole set)."""
    import tritonforge.clients

    monkeypatch.setattr(tritonforge.clients, "Client", _FakeClient)
    _FakeClient.searches = []
    questions = [Question(str(i), f"q {i}", "p0", "42") for i in range(10)]
    questions[3] = Question("3", "unsearchable", "p0", "42")
    report = evaluate("127.0.0.1:9", questions)
    assert report.recall["search"]["recall@1"] == 0.9 and report.recall["search_rerank"]["recall@1"] == 0.9
    assert report.failures == [
        {"id": "3", "error": "model 'search': the question cannot be searched", "pipeline": name}
        for name in ("search", "search_rerank")
    ]
    assert len(report.answers) == 10  # rag answered every question, the unsearchable one too
    rows = [row.plain if hasattr(row, "plain") else str(row) for row in report_table(report).columns[0].cells]
    assert "search questions that failed (misses in its recall)" in rows

    _FakeClient.searches = []
    with pytest.raises(QualityError, match="the search ensemble failed: model 'search': the question"):
        evaluate("127.0.0.1:9", [Question("x", "unsearchable", "p0", "42")])
