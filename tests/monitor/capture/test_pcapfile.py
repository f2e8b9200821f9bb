"""pcap/pcapng/gzip reading against tshark's view of the same files; damaged files never raise."""

from __future__ import annotations

import gzip
import io
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from monitor.capture.bpf import BpfError
from monitor.capture.pcapfile import CaptureError, read_capture
from monitor.errors import LeakmonError
from monitor.stats import Stats
from tests.conftest import PCAPS, corpus

needs_tshark = pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")


def tshark_frames(path: Path) -> list[tuple[int, int, str, str]]:
    out = subprocess.run(["tshark", "-r", str(path), "-T", "fields", "-e", "frame.cap_len", "-e", "frame.len",
                          "-e", "frame.time_epoch", "-e", "frame.interface_name"],
                         capture_output=True, text=True, timeout=60).stdout
    rows = []
    for line in out.splitlines():
        cap, wire, ts, name = line.split("\t")
        rows.append((int(cap), int(wire), ts, name))
    return rows


def ours(path: Path, **kw: object) -> tuple[list, Stats]:
    stats = Stats()
    return list(read_capture(path, stats=stats, **kw)), stats  # type: ignore[arg-type]


@needs_tshark
@pytest.mark.parametrize("path", [
    PCAPS / "decode-two-links.pcapng", PCAPS / "decode-ns-bigendian.pcap", PCAPS / "decode-gzip.pcap",
    PCAPS / "decode-null-be.pcap", PCAPS / "decode-sll.pcap",
], ids=lambda p: p.name)
def test_records_match_tshark(path: Path) -> None:
    expected = tshark_frames(path)
    got, stats = ours(path)
    assert [(len(r.data), r.wire_len) for r in got] == [(c, w) for c, w, _, _ in expected]
    for r, (_, _, ts, _) in zip(got, expected, strict=True):
        if ts:  # tshark gives a simple packet block no time; we keep the previous packet's
            assert abs(r.ts - float(ts)) < 1e-6
    assert [r.pcap_cnt for r in got] == list(range(1, len(got) + 1))
    assert stats.counters == {}


@needs_tshark
@pytest.mark.parametrize("rel", ["suricata-verify/http-post-file/input.pcap", "zeek/http/261/variant-01-chunk_2pow64_overflow.pcap",
                                 "suricata-verify/defrag/bug-6887-defrag-ipv6-tcp/frag-ip-tcp.pcap", "zeek/http-qinq-0.pcap"])
def test_corpus_records_match_tshark(rel: str) -> None:
    path = corpus(rel)
    expected = tshark_frames(path)
    got, _ = ours(path)
    assert [(len(r.data), r.wire_len) for r in got] == [(c, w) for c, w, _, _ in expected]


def test_pcapng_interfaces_link_types_and_resolutions() -> None:
    got, stats = ours(PCAPS / "decode-two-links.pcapng")
    t0 = 1_700_000_000
    assert [(r.linktype, r.iface) for r in got] == [(1, "span0"), (276, "any"), (101, "if2"), (1, "span0"), (1, "span0")]
    assert got[0].ts == pytest.approx(t0 + 1.25, abs=1e-6)
    assert got[1].ts == pytest.approx(t0 + 2.123456789, abs=1e-7)  # if_tsresol 10^-9
    assert got[2].ts == pytest.approx(t0 + 3.5, abs=1e-9)  # if_tsresol 2^-10
    assert got[4].ts == got[3].ts  # the simple packet block has no timestamp of its own
    assert stats.counters == {}


def test_ns_resolution_and_gzip_detected_by_magic() -> None:
    got, _ = ours(PCAPS / "decode-ns-bigendian.pcap")
    # 123 ns after the second; a float near 1.7e9 s resolves about 0.24 µs.
    assert [r.ts - 1_700_000_000 for r in got] == [pytest.approx(i + 1.23e-7, abs=3e-7) for i in range(3)]
    gz, _ = ours(PCAPS / "decode-gzip.pcap")
    plain = gzip.decompress((PCAPS / "decode-gzip.pcap").read_bytes())
    assert plain[:4] == b"\xd4\xc3\xb2\xa1"
    assert len(gz) == 15 and sum(len(r.data) for r in gz) == len(plain) - 24 - 16 * 15


def test_start_cnt_and_bpf_filter(tmp_path: Path) -> None:
    got, stats = ours(PCAPS / "decode-tunnels.pcap", bpf="ip6 or (ip and not proto gre)", start_cnt=100)
    # Frames 2 (GRE over IPv4 with IPv6 inside) etc. are excluded: only non-GRE IPv4 and IPv6 frames remain.
    assert [r.pcap_cnt for r in got] == list(range(101, 101 + len(got)))
    assert 0 < len(got) < 15
    assert stats.get("capture.pcap.bpf_filtered") == 15 - len(got)
    with pytest.raises(BpfError):
        read_capture(PCAPS / "decode-tunnels.pcap", stats=Stats(), bpf="port seventy")


def test_hostile_file_counts_and_continues() -> None:
    got, stats = ours(PCAPS / "decode-hostile.pcap")
    # 6 records before the zero-length one, the good record after it; the last one is cut short.
    assert len(got) == 7
    assert got[-1].data == got[0].data
    assert stats.get("capture.pcap.bad_record") == 1
    assert stats.get("capture.pcap.truncated") == 1
    assert stats.get("capture.pcap.snaplen_exceeded") == 6  # the header's snaplen (40) is a lie


def _pcap(records: list[bytes], *, caplens: list[int] | None = None) -> bytes:
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]
    for i, rec in enumerate(records):
        cap = caplens[i] if caplens else len(rec)
        out.append(struct.pack("<IIII", 1, 0, cap, len(rec)) + rec)
    return b"".join(out)


def test_bogus_caplen_stops_the_file_cleanly(tmp_path: Path) -> None:
    f = tmp_path / "bogus.pcap"
    f.write_bytes(_pcap([b"a" * 60, b"b" * 60, b"c" * 60], caplens=[60, 0x7FFFFFFF, 60]))
    got, stats = ours(f)
    assert [r.data for r in got] == [b"a" * 60]
    assert stats.get("capture.pcap.bad_record") == 1


def test_big_file_across_read_blocks(tmp_path: Path) -> None:
    frames = [bytes([i % 251]) * (1000 + i % 700) for i in range(3000)]  # ~4 MB: several 1 MiB reads
    f = tmp_path / "big.pcap"
    f.write_bytes(_pcap(frames))
    got, stats = ours(f)
    assert [r.data for r in got] == frames and stats.counters == {}
    g = tmp_path / "big.bin"  # gzip'd, no telling extension
    g.write_bytes(gzip.compress(f.read_bytes(), compresslevel=1))
    got, _ = ours(g)
    assert len(got) == 3000 and got[-1].data == frames[-1]


@pytest.mark.parametrize("content,message", [
    (b"", "empty"),
    (b"GET / HTTP/1.1\r\n", "not a pcap or pcapng"),
    (b"\xd4\xc3\xb2\xa1\x02\x00", "truncated pcap file header"),
    (b"\x0a\x0d\x0d\x0a\x1c\x00\x00\x00\x00\x00\x00\x00", "bad byte-order magic"),
    (gzip.compress(b"not a capture at all"), "not a pcap or pcapng"),
    (b"\x1f\x8b\x08\x00garbage", "cannot read"),
])
def test_not_a_capture_is_a_clean_error(tmp_path: Path, content: bytes, message: str) -> None:
    f = tmp_path / "x.pcap"
    f.write_bytes(content)
    with pytest.raises(CaptureError, match=message) as exc:
        read_capture(f, stats=Stats())
    assert isinstance(exc.value, LeakmonError)
    with pytest.raises(CaptureError, match="cannot open"):
        read_capture(tmp_path / "missing.pcap", stats=Stats())


def test_progress_line_only_on_a_tty(monkeypatch: pytest.MonkeyPatch) -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    for stream, shown in ((Tty(), True), (io.StringIO(), False)):
        monkeypatch.setattr("sys.stderr", stream)
        got, _ = ours(PCAPS / "decode-tunnels.pcap", progress=True)
        assert len(got) == 15
        text = stream.getvalue()
        assert ("MB/s" in text and "decode-tunnels.pcap" in text) is shown
