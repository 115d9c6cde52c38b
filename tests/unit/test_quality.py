"""The quality measures' scoring (tritonforge/quality.py) and the project's question set."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tritonforge.quality import QualityError, QualityReport, cites, contains_fact, load_questions, normalise, recall_at

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
