"""`python -m bench --smoke` runs end to end: every available path answers gRPC successes."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.targets import ECHO_MODULE

REPO = Path(__file__).resolve().parents[2]
TOOLS = ("h2load", "nghttp", "nginx", "haproxy")


def _missing() -> list[str]:
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if not ECHO_MODULE.exists():
        missing.append(f"{ECHO_MODULE} (libnginx-mod-http-echo)")
    return missing


@pytest.mark.timeout(90)
@pytest.mark.skipif(bool(_missing()), reason=f"benchmark tools missing: {_missing()}")
def test_bench_smoke(tmp_path: Path) -> None:
    """Exit 0; direct and HAProxy (static, SRV) gave gRPC successes; other cases ran or say why."""
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--out", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=80,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    result = json.loads((tmp_path / "smoke.json").read_text())
    rows = {row["case"]: row for row in result["summary"]}
    for name in ("direct/nginx", "haproxy/nginx"):
        assert rows[name]["status"] == "ok", rows[name]
        assert rows[name]["requests_checked"] >= 300
        assert rows[name]["response_data_bytes"] == 107  # the echoed request frame
    if shutil.which("named"):
        assert rows["haproxy-srv/nginx"]["status"] == "ok", rows["haproxy-srv/nginx"]
    for row in rows.values():
        assert row["status"] in ("ok", "skipped"), row
        assert row["status"] == "ok" or row["reason"]
    assert (tmp_path / "smoke.md").read_text().count("| direct/nginx |") == 1
