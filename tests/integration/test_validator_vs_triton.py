"""The validator's verdicts against a real Triton 2.51 loading the same models (cases in tests/validator_cases.py;
Triton's own invalid-config cases run through ../shared/triton-qa/replay.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from validator_cases import WARMUP_REQUEST_CASES, warmup_request_repo

from tritonforge.errors import ServerError
from tritonforge.server import TritonServer
from tritonforge.validator import check_repository

pytestmark = pytest.mark.integration

# Triton 2.51 refuses a warmup batch over the model's limit and, here, often dies doing so (SIGSEGV in the warmup's
# request, either case, seen in this test's runs): each is loaded on a server of its own
CRASHES = {"nobatch", "bigbatch"}


def test_warmup_requests_triton_refuses_are_refused_with_its_words(tmp_path: Path) -> None:
    repo = warmup_request_repo(tmp_path / "repo")
    verdicts = {Path(p.where).parent.name: p.message for p in check_repository(repo)}
    assert verdicts == {name: case[-1] for name, case in WARMUP_REQUEST_CASES.items()}
    with TritonServer(repo, models=[], startup_timeout=60) as server:
        for name, (*_rest, message) in WARMUP_REQUEST_CASES.items():
            if name in CRASHES:
                continue
            with pytest.raises(ServerError) as refused:
                server.load(name, timeout=60)
            assert message in str(refused.value), (name, str(refused.value))
    for name in CRASHES:
        with TritonServer(repo, models=[], startup_timeout=60) as server:
            with pytest.raises(ServerError):
                server.load(name, timeout=60)
            log = server.log_text()
        assert verdicts[name] in log or "Signal (11) received" in log, log[-2000:]
