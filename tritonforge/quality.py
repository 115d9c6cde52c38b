"""Quality of a served RAG repository, measured over a labelled question set — not only that it runs.

    tritonforge quality --url 127.0.0.1:8001 --questions examples/data/questions.jsonl --json quality.json

Each question (JSONL: ``id``, ``question``, ``passage`` — the id of the passage that answers it — and ``key_fact``,
a short string a right answer contains) is sent to the served ensembles:

* ``search`` (and ``search_rerank`` when the repository has one): recall@k — the share of questions whose passage
  is among the first k results — for k in 1, 3, 5;
* ``rag``: the share of answers that contain the key fact (case, punctuation and spacing ignored) and the share that
  cite the right passage id (the default prompt asks for ``[id]`` citations), plus the share whose retrieved sources
  included the passage at all (an answer cannot contain what it was not given).

Targets (issue #16, SmolLM2-135M-Instruct): recall@3 >= 0.9 and the key fact in >= 60% of answers.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tritonforge.errors import ClientError, TritonForgeError, unreadable

KS = (1, 3, 5)
SEARCH_BATCH = 8
TARGETS = {"recall@3": 0.9, "key_fact": 0.6}


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

    def met(self) -> dict[str, bool | None]:
        recall3 = self.recall.get("search", {}).get("recall@3")
        return {
            "recall@3": None if recall3 is None else recall3 >= TARGETS["recall@3"],
            "key_fact": None if self.key_fact is None else self.key_fact >= TARGETS["key_fact"],
        }

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "targets": TARGETS, "met": self.met()}


def load_questions(path: str | Path) -> list[Question]:
    """The question set; a QualityError names the line and the field that is wrong."""
    questions = []
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise QualityError(f"questions file {path}: {unreadable(err)}") from None
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            questions.append(Question(*(str(row[k]) for k in ("id", "question", "passage", "key_fact"))))
        except (ValueError, KeyError, TypeError) as err:
            raise QualityError(
                f"{path}:{number}: a question is a JSON object with id, question, passage and key_fact ({err})"
            ) from None
    if not questions:
        raise QualityError(f"{path} holds no questions")
    return questions


def normalise(text: str) -> str:
    """Lower case, digits' thousands separators dropped, every other non-alphanumeric run one space."""
    text = re.sub(r"(?<=\d),(?=\d{3}\b)", "", text.lower())
    return " ".join(re.sub(r"[^0-9a-z]+", " ", text).split())


def contains_fact(answer: str, fact: str) -> bool:
    return f" {normalise(fact)} " in f" {normalise(answer)} "


def cites(answer: str, passage: str) -> bool:
    return passage.lower() in answer.lower()


def recall_at(ranked: list[list[str]], truth: list[str], k: int) -> float:
    return sum(t in r[:k] for r, t in zip(ranked, truth, strict=True)) / len(truth)


def evaluate(
    url: str, questions: list[Question], *, rag_model: str = "rag", max_tokens: int = 48, concurrency: int = 4,
    timeout: float = 600.0,
) -> QualityReport:
    """Run the question set against a served repository (gRPC ``url``)."""
    from tritonforge.clients import Client

    report = QualityReport(questions=len(questions))
    truth = [q.passage for q in questions]
    with Client(url, timeout=timeout) as client:
        pipelines = [("search", False)]
        if client.is_model_ready("search_rerank"):
            pipelines.append(("search_rerank", True))
        for name, rerank in pipelines:
            hits = []
            try:
                for start in range(0, len(questions), SEARCH_BATCH):  # within every ensemble's max_batch_size
                    batch = [q.question for q in questions[start : start + SEARCH_BATCH]]
                    hits += client.search(batch, top_k=max(KS), rerank=rerank, top_n=max(KS) if rerank else None)
            except ClientError as err:
                raise QualityError(f"the {name} ensemble failed: {err}") from None
            ranked = [[h.id for h in row] for row in hits]
            report.recall[name] = {f"recall@{k}": recall_at(ranked, truth, k) for k in KS}
        if not client.is_model_ready(rag_model):
            return report

        def ask(q: Question) -> dict[str, Any]:
            answer = client.rag(q.question, max_tokens=max_tokens)
            sources = [s.id for s in answer.sources]
            return {"id": q.id, "answer": answer.text, "sources": sources,
                    "key_fact": contains_fact(answer.text, q.key_fact), "cites": cites(answer.text, q.passage),
                    "given": q.passage in sources}

        with cf.ThreadPoolExecutor(concurrency) as pool:
            report.answers = list(pool.map(ask, questions))
    n = len(report.answers)
    report.key_fact = sum(a["key_fact"] for a in report.answers) / n
    report.cites_passage = sum(a["cites"] for a in report.answers) / n
    report.passage_given = sum(a["given"] for a in report.answers) / n
    return report


def report_table(report: QualityReport) -> Any:
    from rich.table import Table

    table = Table(title=f"quality over {report.questions} questions")
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
    return table
