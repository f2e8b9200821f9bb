"""The reader's record walks (Capture.replay) and iteration against HEAD's per-packet reader.

``pcapfile_reference`` is the RawPacket reader as it was before the pcapng walk (frozen). For
every input, three ways of reading must give the same sequence of (ts, wire_len, data,
pcap_cnt, iface, linktype), the same reader counters and the same ``last_cnt``:

* the reference reader's iteration;
* today's iteration (``for raw in read_capture(...)``);
* today's walk (``Capture.replay``), whose frame handler declines every third frame, so both
  the in-place hand-off and the RawPacket fallback are exercised.

Inputs: the committed pcaps, ``../shared/corpus``, their pcapng conversions by editcap, tshark
and mergecap (several interfaces and link types), generated pcapng and classic pcap files with
damaged blocks (hypothesis), across read-block boundaries (a small ``CHUNK``), with
``start_cnt`` and every ``shard=(i, n)``.
"""

from __future__ import annotations

import gzip
import shutil
import struct
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitor.capture import pcapfile
from monitor.model import LINKTYPE_ETHERNET
from monitor.stats import Stats
from tests.conftest import CORPUS, PCAPS
from tests.monitor.capture import pcapfile_reference as reference
from tests.monitor.capture.pcapng_build import epb, idb, opb, other, shb, spb

needs_editcap = pytest.mark.skipif(shutil.which("editcap") is None or shutil.which("mergecap") is None,
                                   reason="editcap/mergecap (wireshark-common) not installed")

Frame = tuple[float, int, bytes, int, str, int]  # ts, wire_len, data, pcap_cnt, iface, linktype


def _key(raw: Any) -> Frame:
    return (raw.ts, raw.wire_len, bytes(raw.data), raw.pcap_cnt, raw.iface, raw.linktype)


def by_reference(path: Path, **kw: Any) -> tuple[list[Frame], dict, int]:
    stats = Stats()
    capture = reference.read_capture(path, stats=stats, **kw)
    frames = [_key(raw) for raw in capture]
    return frames, dict(stats.counters), capture.last_cnt


def by_iteration(path: Path, **kw: Any) -> tuple[list[Frame], dict, int]:
    stats = Stats()
    capture = pcapfile.read_capture(path, stats=stats, **kw)
    frames = [_key(raw) for raw in capture]
    return frames, dict(stats.counters), capture.last_cnt


def by_walk(path: Path, **kw: Any) -> tuple[list[Frame], dict, int, int]:
    """The walk's frames (in place or through the fallback), counters, last_cnt, and how many
    frames were offered in place."""
    stats = Stats()
    capture = pcapfile.read_capture(path, stats=stats, **kw)
    frames: list[Frame] = []
    offered = [0]

    def frame(buf: Any, start: int, n: int, wire: int, ts: float, cnt: int, iface: str = "",
              linktype: int = LINKTYPE_ETHERNET) -> bool:
        assert isinstance(buf, bytes) and 0 <= start and start + n <= len(buf)
        offered[0] += 1
        if cnt % 3 == 0:
            return False  # the fallback must now get exactly this frame as a RawPacket
        frames.append((ts, wire, buf[start:start + n], cnt, iface, linktype))
        return True

    declined = frames.append

    capture.replay(frame, lambda raw: declined(_key(raw)), lambda raw: declined(_key(raw)))
    return frames, dict(stats.counters), capture.last_cnt, offered[0]


@contextmanager
def chunk(size: int) -> Iterator[None]:
    """Today's reader with read blocks of ``size`` bytes (the reference keeps 1 MiB)."""
    with mock.patch.object(pcapfile, "CHUNK", size):
        yield


def assert_same(path: Path, *, walks: bool | None = None, **kw: Any) -> list[Frame]:
    """All three readings agree; ``walks``: whether the walk must offer every frame in place."""
    want = by_reference(path, **kw)
    assert by_iteration(path, **kw) == want, path
    frames, counters, last_cnt, offered = by_walk(path, **kw)
    assert (frames, counters, last_cnt) == want, path
    if walks is not None:
        assert offered == (len(frames) if walks else 0), path
    return want[0]


def assert_same_sharded(path: Path, n: int, **kw: Any) -> None:
    for index in range(n):
        assert_same(path, shard=(index, n), **kw)


def _is_pcapng(path: Path) -> bool:
    head = path.read_bytes()[:4]
    if head[:2] == b"\x1f\x8b":
        head = gzip.decompress(path.read_bytes())[:4]
    return head == b"\x0a\x0d\x0d\x0a"


COMMITTED = sorted(p for p in PCAPS.iterdir() if p.suffix in (".pcap", ".pcapng"))
CORPUS_FILES = sorted(p for p in CORPUS.rglob("*") if p.suffix in (".pcap", ".pcapng")) if CORPUS.is_dir() else []


def _readable(path: Path) -> bool:
    try:
        reference.read_capture(path, stats=Stats()).close()
    except reference.CaptureError:
        return False
    return True


# ------------------------------------------------------------------ real captures


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: p.name)
def test_committed_captures(path: Path) -> None:
    frames = assert_same(path, walks=True if _is_pcapng(path) else None)
    assert frames
    assert_same(path, start_cnt=500)
    assert_same_sharded(path, 2)
    with chunk(61):
        assert_same(path)
        assert_same_sharded(path, 3)


def test_corpus_captures() -> None:
    paths = [p for p in CORPUS_FILES if _readable(p)]
    if not paths:
        pytest.skip("no corpus")
    total = 0
    for path in paths:
        total += len(assert_same(path))
    for path in paths[::7]:
        assert_same_sharded(path, 2, start_cnt=3)
    assert total > 1000


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """pcapng conversions: editcap of the committed pcaps and a spread of the corpus, tshark of
    two, mergecap of captures with different link types (one IDB each), a snaplen-cut one."""
    if shutil.which("editcap") is None or shutil.which("mergecap") is None:
        return []
    out = tmp_path_factory.mktemp("pcapng")
    made: list[Path] = []

    def run(args: list[str], dest: Path) -> None:
        r = subprocess.run(args, capture_output=True, timeout=120)
        if r.returncode == 0 and dest.exists() and dest.stat().st_size > 0:
            made.append(dest)

    sources = [p for p in COMMITTED if p.suffix == ".pcap"] + [p for p in CORPUS_FILES[::4] if _readable(p)]
    for i, src in enumerate(sources):
        dest = out / f"{i:04d}-{src.stem}.pcapng"
        run(["editcap", "-F", "pcapng", str(src), str(dest)], dest)
    for src in (PCAPS / "sample-leak-http.pcap", PCAPS / "decode-sll.pcap"):
        if shutil.which("tshark"):
            dest = out / f"tshark-{src.stem}.pcapng"
            run(["tshark", "-F", "pcapng", "-r", str(src), "-w", str(dest)], dest)
    links = [PCAPS / n for n in ("decode-sll.pcap", "decode-null-le.pcap", "decode-null-be.pcap",
                                 "decode-tunnels.pcap", "decode-ns-bigendian.pcap", "decode-loop.pcap")]
    dest = out / "merged-links.pcapng"
    run(["mergecap", "-F", "pcapng", "-w", str(dest), *map(str, links)], dest)
    dest = out / "merged-links-appended.pcapng"
    run(["mergecap", "-a", "-F", "pcapng", "-w", str(dest), *map(str, links)], dest)
    dest = out / "snap60.pcapng"
    run(["editcap", "-F", "pcapng", "-s", "60", str(PCAPS / "http-uploads.pcap"), str(dest)], dest)
    return made


@needs_editcap
def test_pcapng_conversions(converted: list[Path]) -> None:
    assert len(converted) > 20
    for path in converted:
        assert _is_pcapng(path)
        assert_same(path, walks=True)
    merged = by_reference(next(p for p in converted if p.name == "merged-links.pcapng"))[0]
    assert len({(f[4], f[5]) for f in merged}) >= 4  # several interfaces, each its own link type
    snapped = by_reference(next(p for p in converted if p.name == "snap60.pcapng"))[0]
    assert any(f[1] > len(f[2]) == 60 for f in snapped)  # wire length kept when the frame was cut


@needs_editcap
def test_pcapng_conversions_sharded_and_across_read_blocks(converted: list[Path]) -> None:
    for path in converted[::3]:
        assert_same_sharded(path, 2, start_cnt=11)
    for path in [p for p in converted if "merged" in p.name or "tshark" in p.name]:
        assert_same_sharded(path, 3)
        for size in (1, 29, 1000):
            with chunk(size):
                assert_same(path, walks=True)
                assert_same(path, shard=(1, 2))


@needs_editcap
def test_pcapng_conversion_reads_as_the_classic_capture(converted: list[Path]) -> None:
    """Not only the same as the old reader: the same frames and times as the pcap it came from."""
    path = next(p for p in converted if p.name.endswith("sample-leak-http.pcapng") and "tshark" not in p.name)
    classic = by_reference(PCAPS / "sample-leak-http.pcap")[0]
    ng = by_walk(path)[0]
    assert [(f[0], f[1], f[2], f[3], f[5]) for f in ng] == [(f[0], f[1], f[2], f[3], f[5]) for f in classic]
    assert {f[4] for f in ng} == {"if0"}


def test_gzip_pcapng_walks(tmp_path: Path) -> None:
    gz = tmp_path / "two-links.bin"
    gz.write_bytes(gzip.compress((PCAPS / "decode-two-links.pcapng").read_bytes()))
    frames = assert_same(gz, walks=True)
    assert {f[5] for f in frames} == {1, 276, 101}
    cut = tmp_path / "cut.pcapng.gz"
    cut.write_bytes(gzip.compress((PCAPS / "decode-two-links.pcapng").read_bytes())[:-30])
    assert_same(cut)


# ------------------------------------------------------------------ generated pcapng

ENDIANS = st.sampled_from("<>")


@st.composite
def frame_bytes(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["ipv4", "ipv4", "ipv6", "vlan", "raw"]))
    if kind == "raw":
        return draw(st.binary(min_size=1, max_size=80))
    src, dst = draw(st.binary(min_size=16, max_size=16)), draw(st.binary(min_size=16, max_size=16))
    tail = draw(st.binary(max_size=40))
    macs = b"\x02" * 12
    if kind == "ipv6":
        return macs + b"\x86\xdd" + b"\x60\0\0\0\0\x14\x06\x40" + src + dst + tail
    ip = b"\x45\0\0\x28\0\0\0\0\x40\x06\0\0" + src[:4] + dst[:4] + tail
    if kind == "vlan":
        return macs + b"\x81\x00\x00\x05\x08\x00" + ip
    return macs + b"\x08\x00" + ip


@st.composite
def pcapng_file(draw: st.DrawFn) -> bytes:
    """One to three sections; interfaces with their own link type, snaplen, name, resolution and
    offset; EPB/SPB/OPB/other blocks in any order; any block may be damaged."""
    out: list[bytes] = []
    for section in range(draw(st.integers(1, 3))):
        endian = draw(ENDIANS)
        bad_bom = section > 0 and draw(st.integers(0, 9)) == 0
        out.append(shb(endian, bom=0x11223344 if bad_bom else 0x1A2B3C4D))
        nif = 0
        for _ in range(draw(st.integers(0, 14))):
            kind = draw(st.sampled_from(["epb"] * 6 + ["spb", "opb", "idb", "idb", "other"]))
            if kind == "idb" or (nif == 0 and draw(st.booleans())):
                out.append(idb(endian, draw(st.sampled_from([1, 1, 1, 113, 101, 0, 276, 147])),
                               snaplen=draw(st.sampled_from([0, 0, 65535, 40, 300000])),
                               name=draw(st.sampled_from(["", "", "eth0", "span1"])),
                               tsresol=draw(st.sampled_from([None, None, 6, 9, 3, 0, 19, 0x8A, 0x80 | 70])),
                               tsoffset=draw(st.sampled_from([None, None, 0, 7, -3]))))
                nif += 1
                continue
            if kind == "other":
                out.append(other(endian, draw(st.sampled_from([4, 5, 10, 0xBAD, 0x40000BAD])),
                                 draw(st.binary(max_size=20))))
                continue
            data = draw(frame_bytes())
            ticks = draw(st.one_of(st.integers(0, 2**64 - 1), st.integers(1_600_000_000 * 10**6, 1_800_000_000 * 10**6)))
            damage = draw(st.sampled_from([None] * 8 + ["blen", "caplen", "ifid", "wire", "short"]))
            blen = draw(st.sampled_from([0, 8, 13, 28, 30, 16 * 1024 * 1024 + 4, 0xFFFFFFFC])) \
                if damage == "blen" else None
            wire = draw(st.integers(0, len(data) - 1)) if damage == "wire" else \
                draw(st.sampled_from([None, None, len(data) + 1000]))
            ifid = nif + draw(st.integers(0, 2)) if damage == "ifid" else draw(st.integers(0, max(nif - 1, 0)))
            if kind == "epb":
                caplen = draw(st.sampled_from([0, len(data) + 4, len(data) + 5, 300000])) if damage == "caplen" else None
                if damage == "short":
                    blen = 12 + draw(st.integers(0, 4)) * 4  # frames, but too short for an EPB
                out.append(epb(endian, ifid, ticks, data, wire=wire, caplen=caplen, blen=blen,
                               comment=draw(st.sampled_from([b"", b"note"]))))
            elif kind == "spb":
                out.append(spb(endian, data, wire=wire, blen=12 if damage == "short" else blen))
            else:
                out.append(opb(endian, ifid, ticks, data, wire=wire, blen=blen))
    data = b"".join(out)
    if draw(st.integers(0, 4)) == 0:
        data = data[:draw(st.integers(12, len(data)))]  # the writer died mid-block
    return data


@st.composite
def mutated(draw: st.DrawFn, files: st.SearchStrategy[bytes]) -> bytes:
    data = bytearray(draw(files))
    for _ in range(draw(st.integers(0, 6))):
        pos = draw(st.integers(0, len(data) - 1))
        data[pos] = draw(st.integers(0, 255))
    return bytes(data)


READ_OPTIONS = st.fixed_dictionaries({}, optional={"start_cnt": st.integers(0, 10**6)})
SHARDS = st.sampled_from([None, (0, 1), (0, 2), (1, 2), (0, 3), (2, 3)])
CHUNKS = st.sampled_from([3, 12, 28, 29, 64, 1 << 20])


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(content=pcapng_file() | mutated(pcapng_file()), kw=READ_OPTIONS, shard=SHARDS, size=CHUNKS)
def test_generated_pcapng(tmp_path: Path, content: bytes, kw: dict, shard: tuple[int, int] | None,
                          size: int) -> None:
    path = tmp_path / "gen.pcapng"
    path.write_bytes(content)
    if not _readable(path):
        with pytest.raises(pcapfile.CaptureError):
            pcapfile.read_capture(path, stats=Stats())
        return
    with chunk(size):
        assert_same(path, walks=True, shard=shard, **kw)


def test_generated_pcapng_is_not_vacuous(tmp_path: Path) -> None:
    """The generator reaches what it is for: packets of several link types and interfaces,
    both byte orders, bad records and truncation counted."""
    e = "<"
    content = b"".join([
        shb(e), idb(e, 1, name="a", tsresol=9), idb(e, 113, tsresol=0x8A, tsoffset=5),
        epb(e, 0, 1_700_000_000_123_456_789, b"x" * 60), epb(e, 1, 1024 * 7, b"y" * 30, wire=100),
        spb(e, b"z" * 20), opb(e, 1, 2048, b"w" * 10), epb(e, 5, 1, b"bad ifid"), epb(e, 0, 1, b"v", caplen=0),
        other(e, 5, b"stats"),
        shb(">"), idb(">", 101), epb(">", 0, 3_000_000, b"\x45" + b"\0" * 30), epb(">", 0, 1, b"cut")[:-6],
    ])
    path = tmp_path / "shapes.pcapng"
    path.write_bytes(content)
    frames, counters, last_cnt = by_reference(path)
    assert [(f[4], f[5]) for f in frames] == [("a", 1), ("if1", 113), ("a", 1), ("if1", 113), ("if0", 101)]
    assert frames[0][0] == pytest.approx(1_700_000_000.123456789) and frames[1][0] == 7 + 5
    assert frames[2][0] == frames[1][0] and frames[3][0] == 2 + 5 and frames[4][0] == 3.0
    assert frames[1][1] == 100
    assert counters == {("capture.pcap.bad_record", ()): 2, ("capture.pcap.truncated", ()): 1} and last_cnt == 5
    assert by_walk(path)[:3] == (frames, counters, last_cnt)


# ------------------------------------------------------------------ generated classic pcap


@st.composite
def pcap_file(draw: st.DrawFn) -> bytes:
    """Classic pcap, µs/ns/modified, both byte orders, Ethernet or other link types, with zero,
    huge, snaplen-exceeding and cut records."""
    endian = draw(ENDIANS)
    magic = draw(st.sampled_from([0xA1B2C3D4, 0xA1B23C4D, 0xA1B2CD34]))
    snaplen = draw(st.sampled_from([65535, 0, 40, 300000]))
    linktype = draw(st.sampled_from([1, 1, 1, 113, 101, 0]))
    out = [struct.pack(endian + "IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype)]
    extra = b"\0" * 8 if magic == 0xA1B2CD34 else b""
    for _ in range(draw(st.integers(0, 12))):
        data = draw(frame_bytes())
        caplen = draw(st.sampled_from([len(data)] * 8 + [0, 300000]))
        wire = draw(st.sampled_from([len(data), len(data), 0, len(data) + 99]))
        out.append(struct.pack(endian + "IIII", draw(st.integers(0, 2**32 - 1)), draw(st.integers(0, 10**9)),
                               caplen, wire) + extra + (data if caplen else b""))
    content = b"".join(out)
    if draw(st.integers(0, 4)) == 0:
        content = content[:draw(st.integers(24, len(content)))]
    return content


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(content=pcap_file() | mutated(pcap_file()), kw=READ_OPTIONS, shard=SHARDS, size=CHUNKS)
def test_generated_pcap(tmp_path: Path, content: bytes, kw: dict, shard: tuple[int, int] | None,
                        size: int) -> None:
    path = tmp_path / "gen.pcap"
    path.write_bytes(content)
    if not _readable(path):
        return
    with chunk(size):
        assert_same(path, shard=shard, **kw)
