from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT.parent / "shared" / "corpus"
PCAPS = ROOT / "pcaps"
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TZ", "UTC")
# Compiled-database cache (detectors/dbcache.py): a private one for this test run, inherited by
# the sensors that e2e tests start as subprocesses, never the user's ~/.cache/leakmon.
_CACHE = tempfile.mkdtemp(prefix="leakmon-test-cache-")
os.environ.setdefault("LEAKMON_CACHE_DIR", _CACHE)
atexit.register(shutil.rmtree, _CACHE, True)


def needs_root_netns() -> pytest.MarkDecorator:
    ok = os.geteuid() == 0 and shutil.which("ip") is not None and shutil.which("tcpdump") is not None
    return pytest.mark.skipif(not ok, reason="needs root, iproute2 and tcpdump for network namespaces")


def corpus(rel: str) -> Path:
    p = CORPUS / rel
    if not p.exists():
        pytest.skip(f"corpus capture {rel} not present")
    return p


@pytest.fixture
def corpus_path():
    return corpus


# Hypothesis: deterministic and without per-example deadlines in CI (a loaded 2-core machine must
# not turn a slow example into a failure); LEAKMON_FUZZ=1 explores with fresh random inputs.
try:
    from hypothesis import HealthCheck, settings

    settings.register_profile("ci", deadline=None, derandomize=True, print_blob=True,
                              suppress_health_check=[HealthCheck.too_slow])
    settings.register_profile("explore", deadline=None, max_examples=2000,
                              suppress_health_check=[HealthCheck.too_slow])
    settings.load_profile("explore" if os.environ.get("LEAKMON_FUZZ") == "1" else "ci")
except ImportError:  # hypothesis is a test dependency; without it the fuzz tests are not collected
    pass
