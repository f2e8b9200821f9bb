"""Hypothesis: random and mutated capture files never raise once accepted, and the record caps hold."""

from __future__ import annotations

import gzip
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitor.capture.pcapfile import MAX_RECORD, CaptureError, read_capture
from monitor.stats import Stats
from tests.conftest import PCAPS

SEEDS = [(PCAPS / n).read_bytes() for n in ("decode-two-links.pcapng", "decode-tunnels.pcap",
                                             "decode-ns-bigendian.pcap", "decode-hostile.pcap")]


@st.composite
def mutated_file(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(0, 12))):
        pos = draw(st.integers(0, len(data) - 1))
        data[pos] = draw(st.integers(0, 255))
    data = data[: draw(st.integers(0, len(data)))]
    if draw(st.booleans()):
        return gzip.compress(bytes(data))
    return bytes(data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=mutated_file() | st.binary(max_size=300))
def test_read_capture_never_raises_after_the_header(tmp_path: Path, content: bytes) -> None:
    f = tmp_path / "fuzz.cap"
    f.write_bytes(content)
    stats = Stats()
    try:
        records = read_capture(f, stats=stats)
    except CaptureError:
        return  # not a capture: a clean, printable error
    count = 0
    for raw in records:
        count += 1
        assert 0 < len(raw.data) <= MAX_RECORD and raw.wire_len >= len(raw.data)
        assert raw.pcap_cnt == count
    assert count <= len(content)
