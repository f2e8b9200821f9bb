"""Smoke of bench/http_bench.py: every workload decodes completely in every context.

The benchmark checks each run before timing it (bench/http_bench.py:_check: the body file has
the body's size and a hash, every file CLOSED, no anomaly), so a fast figure is never a broken
parse; here with small bodies, once.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("http_bench", ROOT / "bench" / "http_bench.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["http_bench"] = module
    spec.loader.exec_module(module)
    return module


def test_http_bench_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    bench = _load()
    assert bench.main(["--mbytes", "0.3", "--repeat", "1"]) == 0
    out = capsys.readouterr().out
    for kind in bench.WORKLOADS:
        for stage in ("http (file stub)", "http+file", "http+RecordingContext", "FileObject.write"):
            assert re.search(rf"^{re.escape(kind)} +{re.escape(stage)} +[0-9.]+ ", out, re.M), (kind, stage)
    assert re.search(r"^gzip +zlib inflate \(floor\)", out, re.M)
    # The connection the gzip workload sends is what a client would decode to the same text.
    runs, decoded = bench.build("gzip", 300_000)
    ctx = bench.run_http(bench.segments(runs, 1448), "real")
    body = max(ctx.files, key=lambda f: f.size)
    assert body.size == decoded and body.declared_type == "text/html" and body.sha256
