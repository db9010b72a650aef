"""The soak of ``stfn serve`` (benchmarks/serve_soak.py, issue 28) at quick size: 42 mixed good and
hostile requests from 4 clients against 1 worker and no queue place, so back-pressure (503, retried)
is part of it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from serve_helpers import REPO


@pytest.mark.slow
@pytest.mark.shared("videos/test.avi")
def test_quick_soak_answers_every_good_request_and_each_attack_as_expected(tmp_path) -> None:
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "serve_soak.py"), "--quick", "--out", str(tmp_path),
                           "--workers", "1", "--queue", "0"], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads((tmp_path / "serve_soak.json").read_text())
    s = doc["summary"]
    assert s["requests"] == 42 and s["good"] == 21 and not s["failed"], s["failures"]
    assert s["by_kind"]["good"] == {"200": 21}
    for kind, status in [("text", "422"), ("png", "422"), ("truncated", "422"), ("unknown_model", "404"),
                         ("too_big", "413"), ("chunked_too_big", "413"), ("disconnect", "hung up")]:
        assert set(s["by_kind"][kind]) == {status}, (kind, s["by_kind"][kind])
    assert s["statuses"].get("503", 0) >= 1 and s["attempts"] > s["requests"]  # 4 clients, 1 slot: refused, retried
    assert s["pool_after"]["held"] == 0 and s["rss_after_mb"] > s["rss_before_mb"] * 0.5 > 50
    assert "| requests | attempts |" in proc.stdout and doc["machine"]["cpus"] >= 1
