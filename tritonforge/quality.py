"""Quality of a served RAG repository, measured over a labelled question set — not only that it runs.

    tritonforge quality --url 127.0.0.1:8001 --questions examples/data/questions.jsonl --json quality.json

Each question (JSONL: ``id``, ``question``, ``passage`` — the id of the passage that answers it — and ``key_fact``,
a short string a right answer contains) is sent to the served ensembles:

* ``search`` (and ``search_rerank`` when the repository has one): recall@k — the share of questions whose passage
  is among the first k results — for k in 1, 3, 5; ``search_rerank`` reranks RERANK_CANDIDATES retrieved candidates
  down to 5 (with 5 candidates its recall@5 could only equal search's);
* ``rag``: the share of answers that contain the key fact (case, accents, punctuation and spacing ignored, in any
  script) and the share that cite the right passage id (the default prompt asks for ``[id]`` citations: the id in
  square brackets, whole), plus the share whose retrieved sources included the passage at all (an answer cannot
  contain what it was not given). A question whose rag call fails (the model unloaded, a question too long for the
  context) is recorded with its error in ``failures``; the shares are over the questions answered.

Targets (issue #16, SmolLM2-135M-Instruct): recall@3 >= 0.9 and the key fact in >= 60% of answers.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import re
import unicodedata
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tritonforge.errors import (
    ClientError,
    DeadlineExceededError,
    TransientError,
    TritonForgeError,
    unreadable,
)
from tritonforge.values import is_whole

KS = (1, 3, 5)
SEARCH_BATCH = 8
# candidates search_rerank retrieves before reranking to max(KS): the served pipelines' default_top_k
# (examples/rag.yaml), so the reranker's recall@5 measures what it picks from what the rag ensemble would give it
RERANK_CANDIDATES = 10
TARGETS = {"recall@3": 0.9, "key_fact": 0.6}
FIELDS = ("id", "question", "passage", "key_fact")


class QualityError(TritonForgeError):
    """The question set cannot be read, or the repository lacks what is measured."""


@dataclass(frozen=True)
class Question:
    id: str
    question: str
    passage: str
    key_fact: str


@dataclass
class QualityReport:
    questions: int
    recall: dict[str, dict[str, float]] = field(default_factory=dict)  # pipeline -> {"recall@k": share}
    key_fact: float | None = None
    cites_passage: float | None = None
    passage_given: float | None = None
    answers: list[dict[str, Any]] = field(default_factory=list)
    # {"id", "error", "pipeline"} of each call that failed: a search pipeline's (the question counts as a miss in
    # its recall) or the rag model's (the question is left out of the answer shares)
    failures: list[dict[str, str]] = field(default_factory=list)
    rerank_candidates: int = RERANK_CANDIDATES

    def met(self) -> dict[str, bool | None]:
        recall3 = self.recall.get("search", {}).get("recall@3")
        return {
            "recall@3": None if recall3 is None else recall3 >= TARGETS["recall@3"],
            "key_fact": None if self.key_fact is None else self.key_fact >= TARGETS["key_fact"],
        }

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "failed": len(self.failures), "targets": TARGETS, "met": self.met()}


def load_questions(path: str | Path) -> list[Question]:
    """The question set; a QualityError names the line and the field that is wrong.

    Each field is a non-empty string (str() of a list or null was measured as if it were text); ids are unique (a
    per-question record by id must name one question).
    """
    questions = []
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise QualityError(f"questions file {path}: {unreadable(err)}") from None
    seen: dict[str, int] = {}
    shape = "a question is a JSON object with id, question, passage and key_fact, each a non-empty string"
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            row = json.loads(line)
        except ValueError as err:
            raise QualityError(f"{where}: not JSON ({err}); {shape}") from None
        if not isinstance(row, dict):
            raise QualityError(f"{where}: {_json_type(row)}, not an object; {shape}")
        missing = [k for k in FIELDS if k not in row]
        if missing:
            raise QualityError(f"{where}: missing {', '.join(missing)}; {shape}")
        for key in FIELDS:
            value = row[key]
            if not isinstance(value, str):
                raise QualityError(f"{where}: {key} is {_json_type(value)}, not a string; {shape}")
            if not value.strip():
                raise QualityError(f"{where}: {key} is empty; {shape}")
        if not normalise(row["key_fact"]):  # it would match every answer, or none: it measures nothing
            raise QualityError(f"{where}: key_fact {row['key_fact']!r} has no letter or digit to look for")
        if row["id"] in seen:
            raise QualityError(f"{where}: id {row['id']!r} is already the id of line {seen[row['id']]}; ids are unique")
        seen[row["id"]] = number
        questions.append(Question(*(row[k] for k in FIELDS)))
    if not questions:
        raise QualityError(f"{path} holds no questions")
    return questions


def _json_type(value: Any) -> str:
    """What a decoded JSON value was, in JSON's words."""
    if value is None:
        return "null"
    names = {bool: "a boolean", int: "a number", float: "a number", list: "an array", dict: "an object"}
    return names.get(type(value), "a string")


# Combining diacritics (accents, umlauts, cedillas, Greek tonos...) are dropped after NFKD: "Zürich" is "zurich".
# Other marks are kept as part of their word: a Devanagari vowel sign or virama, a kana voicing mark.
_DIACRITICS = re.compile("[\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f]")
# Scripts written without spaces between words (Han, kana, Thai, Lao, Khmer, Myanmar): each character is a word of
# its own, or "北京" would never be a whole word of "首都是北京".
_UNSPACED = re.compile(
    "([\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
    "\U00020000-\U0002ffff])"
)


def normalise(text: str) -> str:
    """Compatibility forms unified (NFKD), accents dropped, case folded, digits' thousands separators dropped; letters,
    digits and marks of every script kept, every other run one space."""
    text = _DIACRITICS.sub("", unicodedata.normalize("NFKD", text)).casefold()
    text = re.sub(r"(?<=\d),(?=\d{3}\b)", "", text)
    text = _UNSPACED.sub(r" \1 ", text)
    kept = "".join(c if unicodedata.category(c)[0] in "LNM" else " " for c in text)
    return " ".join(kept.split())


def contains_fact(answer: str, fact: str) -> bool:
    """``fact`` as whole words of ``answer`` (see normalise); a fact with no letter or digit never matches."""
    wanted = normalise(fact)
    return bool(wanted) and f" {wanted} " in f" {normalise(answer)} "


def cites(answer: str, passage: str) -> bool:
    """The answer cites ``passage`` as the prompt asks: its id, whole, in square brackets (``[p1]``, or one of
    ``[p1, p3]``: clients.generation.cited_ids), case aside. ``[p12]`` does not cite ``p1``, nor does a bare
    mention; an empty id is never cited."""
    from tritonforge.clients.generation import cited_ids

    wanted = passage.strip().casefold()
    return bool(wanted) and wanted in (cited.casefold() for cited in cited_ids(answer))


def recall_at(ranked: list[list[str]], truth: list[str], k: int) -> float:
    return sum(t in r[:k] for r, t in zip(ranked, truth, strict=True)) / len(truth)


def evaluate(
    url: str, questions: list[Question], *, rag_model: str = "rag", max_tokens: int = 48, concurrency: int = 4,
    timeout: float = 600.0,
) -> QualityReport:
    """Run the question set against a served repository (gRPC ``url``).

    A call that fails is recorded in ``failures`` (id, error, pipeline) and the run goes on: one unloaded model or
    one question too long for the context no longer discarded every other answer. A search batch that fails is
    asked again one question at a time; a question that still fails is a miss in that pipeline's recall. Only a
    pipeline that failed for every question ends the run (QualityError). The caller decides what a failure
    means (the command line exits 1 when any question failed).
    """
    from tritonforge.clients import Client

    # checked before the search pass: a bad value was refused only by the first rag call, after it
    if not is_whole(max_tokens) or max_tokens < 1:
        raise QualityError(f"max_tokens={max_tokens!r} (--max-tokens) must be an integer >= 1")
    max_tokens = int(max_tokens)  # a numpy integer too: the request and the JSON get an int
    report = QualityReport(questions=len(questions))
    truth = [q.passage for q in questions]
    with Client(url, timeout=timeout) as client:
        pipelines = [("search", False)]
        if client.is_model_ready("search_rerank"):
            pipelines.append(("search_rerank", True))
        for name, rerank in pipelines:
            top_k = max(RERANK_CANDIDATES, max(KS)) if rerank else max(KS)

            def search(batch: list[Question], rerank: bool = rerank, top_k: int = top_k) -> list[list[str]]:
                texts = [q.question for q in batch]
                rows = client.search(texts, top_k=top_k, rerank=rerank, top_n=max(KS) if rerank else None)
                return [[h.id for h in row] for row in rows]

            ranked: list[list[str]] = []
            failed: list[dict[str, str]] = []
            for start in range(0, len(questions), SEARCH_BATCH):  # within every ensemble's max_batch_size
                batch = questions[start : start + SEARCH_BATCH]
                try:
                    ranked += search(batch)
                except ClientError:
                    # one question alone, so a failing one costs only itself: it retrieved nothing (a miss in
                    # every recall, which stays over the whole set) and is listed with its error
                    for q in batch:
                        try:
                            ranked += search([q])
                        except (TransientError, DeadlineExceededError) as err:
                            # the server, not the question: asking the rest one by one would wait out each one's
                            # deadline (a hung Triton: ~100 x 30 s before the run ended)
                            raise QualityError(f"the {name} ensemble failed: {err}") from None
                        except ClientError as err:
                            ranked.append([])
                            failed.append({"id": q.id, "error": str(err), "pipeline": name})
            if len(failed) == len(questions):  # nothing was measured: the pipeline, not a question, is broken
                raise QualityError(f"the {name} ensemble failed: {failed[0]['error']}")
            report.failures += failed
            report.recall[name] = {f"recall@{k}": recall_at(ranked, truth, k) for k in KS}
        if not client.is_model_ready(rag_model):
            return report

        def ask(q: Question) -> dict[str, Any]:
            try:
                answer = client.rag(q.question, max_tokens=max_tokens, model=rag_model)
            except ClientError as err:
                return {"id": q.id, "error": str(err), "pipeline": rag_model}
            sources = [s.id for s in answer.sources]
            return {"id": q.id, "answer": answer.text, "sources": sources,
                    "key_fact": contains_fact(answer.text, q.key_fact), "cites": cites(answer.text, q.passage),
                    "given": q.passage in sources}

        with cf.ThreadPoolExecutor(concurrency) as pool:
            results = list(pool.map(ask, questions))
    report.answers = [r for r in results if "error" not in r]
    report.failures += [r for r in results if "error" in r]
    n = len(report.answers)
    if n:  # every question failed: no share to give (None), the failures say why
        report.key_fact = sum(a["key_fact"] for a in report.answers) / n
        report.cites_passage = sum(a["cites"] for a in report.answers) / n
        report.passage_given = sum(a["given"] for a in report.answers) / n
    return report


def report_table(report: QualityReport) -> Any:
    from rich.table import Table

    failed = f", {len(report.failures)} call(s) failed" if report.failures else ""
    table = Table(title=f"quality over {report.questions} questions{failed}")
    for column in ("measure", "figure", "target", "met"):
        table.add_column(column)
    met = report.met()
    for name, recalls in report.recall.items():
        for key, value in recalls.items():
            target = f">= {TARGETS[key]}" if name == "search" and key in TARGETS else "-"
            ok = met[key] if name == "search" and key in met else None
            table.add_row(f"{name} {key}", f"{value:.3f}", target, "-" if ok is None else ("yes" if ok else "no"))
    rows: list[tuple[str, float | None, str | None]] = [
        ("rag answers with the key fact", report.key_fact, "key_fact"),
        ("rag answers citing the right passage", report.cites_passage, None),
        ("rag prompts that held the right passage", report.passage_given, None),
    ]
    for label, share, target_key in rows:
        if share is not None:
            passed = met.get(target_key) if target_key else None
            table.add_row(label, f"{share:.3f}", f">= {TARGETS[target_key]}" if target_key else "-",
                          "-" if passed is None else ("yes" if passed else "no"))
    for pipeline in dict.fromkeys(f["pipeline"] for f in report.failures):
        count = sum(f["pipeline"] == pipeline for f in report.failures)
        # rag's shares are over the questions answered; a search's recall counts its failed questions as misses
        left = "not in the shares" if pipeline not in report.recall else "misses in its recall"
        table.add_row(f"{pipeline} questions that failed ({left})", str(count), "0", "no")
    return table
