"""What a refused promote does to a real Triton's own readiness (Triton 2.51, strict readiness as `serve` runs it).

Measured: once a version fails to load, /v2/health/ready answers 400 although the old version serves, and no reload
clears it (of the restored config, with a config override, a changed config or another version set), only a restart
or unloading the model. The promote cannot undo that without dropping the serving version, so its message says it.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from release_support import answer, slow_version

from tritonforge.errors import ReleaseError

pytestmark = pytest.mark.integration

KEY = "release-readiness-key"


@pytest.fixture()
def served(tmp_path: Path) -> Iterator[tuple[Path, object]]:
    from tritonforge.releases import add_versions
    from tritonforge.server import TritonServer

    repo = slow_version(tmp_path / "repo", add=1)
    assert add_versions(repo, slow_version(tmp_path / "broken", add=2, fails=True)) == {"m": 2}
    with TritonServer(repo, admin_key=KEY, startup_timeout=120) as server:
        yield repo, server


def _status(server: object, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://{server.endpoints.http}{path}", timeout=10) as response:  # type: ignore[attr-defined]
            return int(response.status)
    except urllib.error.HTTPError as err:
        return int(err.code)


def test_a_refused_promote_says_that_triton_reports_not_ready_until_restarted(served) -> None:
    from tritonforge.releases import TritonControl, model_releases, promote
    from tritonforge.server import TritonServer

    repo, server = served
    assert _status(server, "/v2/health/ready") == 200
    control = TritonControl(server.endpoints.http, admin_key=KEY, timeout=60)
    with pytest.raises(ReleaseError) as refused:
        promote(repo, "m", 2, control=control)
    message = " ".join(str(refused.value).split())
    assert "version 2 of m failed to load, so it was not promoted (version 1 still serves" in message
    assert "Triton now reports itself not ready on /v2/health/ready until tritonserver restarts" in message
    assert "take the pod out of service although version 1 serves" in message

    # what the message says, as measured: the model serves, the server calls itself not ready, a reload does not help
    assert answer(server) == 1.0 and model_releases(repo, "m").active == (1,)
    assert _status(server, "/v2/models/m/ready") == 200
    assert _status(server, "/v2/health/ready") == 400
    control.load("m")
    assert _status(server, "/v2/health/ready") == 400
    assert control.server_ready() is False
    with TritonServer(repo, startup_timeout=120) as restarted:  # a restart reads the restored config: ready
        assert _status(restarted, "/v2/health/ready") == 200 and answer(restarted) == 1.0
