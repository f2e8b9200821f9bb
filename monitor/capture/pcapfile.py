"""Capture files (pcap, pcapng, gzip-compressed either) as a stream of :class:`RawPacket`.

The file is read in large blocks and record headers are decoded with ``struct.unpack_from``
straight from the block, so the per-record cost is one unpack, one slice and one RawPacket.
:meth:`Capture.replay` (the sensor's replay) skips even those for the frames its handler takes
in place (classic Ethernet pcap, and pcapng of any link types): they are never sliced out of
the block. pcapng's Enhanced Packet Blocks take a fast path (one unpack of the block header
and the packet fields); every other block takes the general one.

Damaged files never raise once the header has been accepted:

* a final record cut short (the writer died) -> ``capture.pcap.truncated``, end of file;
* a record whose length cannot be right (zero, above 256 KiB, a pcapng block that does not
  frame) -> ``capture.pcap.bad_record``; a zero-length record is skipped, a length that
  breaks the framing ends the file (nothing after it can be located reliably);
* a record longer than the header's snaplen but otherwise sane (a writer that lied about
  its snaplen) is delivered and counted in ``capture.pcap.snaplen_exceeded``.

A file that is not a capture at all raises :class:`CaptureError` with a message fit for the CLI.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Callable, Generator, Iterator
from typing import IO, Protocol

from monitor.capture.bpf import BpfProgram
from monitor.capture.progress import ProgressLine
from monitor.errors import LeakmonError
from monitor.model import LINKTYPE_ETHERNET, RawPacket
from monitor.shard import PAIR_PARITY_BITS, shard_at, v4_pair_shard
from monitor.stats import Stats

CHUNK = 1 << 20  # bytes per read
MAX_RECORD = 256 * 1024  # largest believable captured frame
MAX_BLOCK = 16 * 1024 * 1024  # largest believable pcapng block (name resolution, secrets, ...)
# Sharding's common frame (untagged Ethernet + IPv4) in one unpack from the frame's start: the
# EtherType, IP version/IHL and TOS as one number (``>> 12 == ETHER_V4_TAG``: EtherType 0x0800
# and version 4), then both IPv4 addresses as one number (monitor.shard.v4_pair_shard). Needs
# 34 bytes of frame (ETHER_V4_MIN). Every --workers worker tests every record of the file, most
# of them to skip them: this test is what a worker pays for each frame of the other shards.
_ETHER_V4 = struct.Struct("!12xI10xQ").unpack_from
ETHER_V4_TAG = 0x8004
ETHER_V4_MIN = 34
_NEVER = MAX_BLOCK + 1  # a frame length no record reaches: the other link types never take the inline test
_NOT_V4 = (0, 0)  # the unpack's stand-in for a frame too short (or of another link type): shard_at decides

PCAP_MAGIC_US = 0xA1B2C3D4
PCAP_MAGIC_NS = 0xA1B23C4D
PCAP_MAGIC_MODIFIED = 0xA1B2CD34  # Kuznetzov's patched libpcap: 8 more bytes per record header
PCAPNG_SHB = 0x0A0D0D0A
PCAPNG_BYTE_ORDER = 0x1A2B3C4D
PCAPNG_IDB = 1
PCAPNG_OPB = 2  # obsolete packet block
PCAPNG_SPB = 3
PCAPNG_EPB = 6
IDB_OPT_NAME = 2
IDB_OPT_TSRESOL = 9
IDB_OPT_TSOFFSET = 14

_READ_ERRORS = (OSError, EOFError, zlib.error)


class FrameHandler(Protocol):
    """Capture.replay's in-place frame handler (``Pipeline.process_frame``): True when it took
    the frame ``buf[start:start + n]``. Classic pcap passes six arguments (its one interface is
    ``""``, its link type Ethernet); pcapng passes the frame's interface name and link type."""

    def __call__(self, buf: bytes, start: int, n: int, wire: int, ts: float, cnt: int,
                 iface: str = "", linktype: int = LINKTYPE_ETHERNET, /) -> bool: ...


class CaptureError(LeakmonError):
    """The file cannot be opened or is not a pcap/pcapng capture."""


class Capture(Iterator[RawPacket]):
    """What :func:`read_capture` returns: iterate it for the RawPackets, or :meth:`replay` it.

    ``for raw in capture`` runs the reader's own generator (``__iter__`` returns it, so no
    wrapper sits between the reader and the loop). ``last_cnt`` is the ``pcap_cnt`` of the last
    frame read, counting frames of other shards that ``shard`` skipped, so a replay of several
    files can continue the numbering (``start_cnt``) where this file stopped. It is final once
    the iteration has ended (``start_cnt`` until then).
    """

    __slots__ = ("_records", "_walk", "last_cnt")

    def __init__(self, start_cnt: int) -> None:
        self._records: Iterator[RawPacket] = iter(())
        # Classic Ethernet pcap or pcapng read without BPF or progress: the record walk that hands frames
        # to replay()'s callbacks in place (None: replay() iterates the RawPackets).
        self._walk: Callable[[FrameHandler, Callable[[RawPacket], None]], Iterator[RawPacket]] | None = None
        self.last_cnt = start_cnt

    def __iter__(self) -> Iterator[RawPacket]:
        return self._records

    def __next__(self) -> RawPacket:
        return next(self._records)

    def replay(self, frame: FrameHandler, fallback: Callable[[RawPacket], None],
               process: Callable[[RawPacket], None]) -> None:
        """Every frame, in order, as ``process(raw)`` would see it, without a RawPacket where possible.

        Where the record walk can (see ``_walk``), each frame is first offered in place as
        ``frame(buf, start, caplen, wire_len, ts, pcap_cnt[, iface, linktype])``
        (``buf[start:start + caplen]`` is the frame; ts, pcap_cnt, wire_len, and for pcapng the
        interface name and link type, exactly as the RawPacket would carry them);
        when that returns False, ``fallback`` gets the frame's RawPacket. Everywhere else
        (BPF, progress, classic pcap of other link types) every RawPacket goes to ``process``.
        Use either this or the iteration, not both.
        """
        walk = self._walk
        if walk is None:
            for raw in self._records:
                process(raw)
            return
        self._walk = None
        self._records = iter(())
        for _ in walk(frame, fallback):  # the walk yields nothing when it has a frame handler
            pass

    def close(self) -> None:
        close = getattr(self._records, "close", None)
        if close is not None:
            close()


def read_capture(path: str | os.PathLike[str], *, stats: Stats, bpf: str = "", progress: bool = False,
                 start_cnt: int = 0, shard: tuple[int, int] | None = None) -> Capture:
    """Every record of a pcap/pcapng file (optionally gzip-compressed) as a RawPacket.

    ``pcap_cnt`` numbers the packets from ``start_cnt + 1`` (frames removed by ``bpf`` are not
    numbered, as with libpcap). ``shard=(index, n)`` keeps only the frames for which
    :func:`monitor.shard.shard_of` is ``index`` (``--workers``: every worker reads the whole
    file); the others are skipped before a RawPacket is built but keep their numbers, and
    every reader counter (truncation, bad records, BPF) still counts the whole file. The file
    header is checked before this returns, so a file that is not a capture raises
    :class:`CaptureError` here, not during iteration.
    """
    name = os.fspath(path)
    if bpf:
        BpfProgram(bpf, LINKTYPE_ETHERNET)  # a syntax error is reported now, not mid-replay
    if shard is not None and not 0 <= shard[0] < shard[1]:
        raise ValueError(f"shard {shard}: the index must be in [0, n)")
    capture = Capture(start_cnt)
    # The reader skips other shards itself, unless BPF must number the frames first.
    inner_shard = shard if not bpf and shard is not None and shard[1] > 1 else None
    counter = None if bpf else capture  # the layer that numbers the frames reports last_cnt
    raw_file, stream = _open(name)
    records: Iterator[RawPacket]
    try:
        head = _read_exact(stream, 4)
        if len(head) < 4:
            raise CaptureError(f"{name}: not a capture file (empty or shorter than a header)")
        magic_le = struct.unpack("<I", head)[0]
        magic_be = struct.unpack(">I", head)[0]
        if magic_le == PCAPNG_SHB:
            first, ng_endian = _pcapng_start(name, stream, head)
            records = _pcapng_blocks(stream, raw_file, stats, first, ng_endian, start_cnt, counter, inner_shard)
            if not bpf and not progress:
                # Capture.replay's walk, as for classic pcap below (any link type: the handler
                # declines what it cannot take, and gets the frame's link type and interface).
                def ng_walk(frame: FrameHandler, fallback: Callable[[RawPacket], None]) -> Iterator[RawPacket]:
                    return _pcapng_blocks(stream, raw_file, stats, first, ng_endian, start_cnt, counter,
                                          inner_shard, frame, fallback)

                capture._walk = ng_walk
        elif PCAP_MAGIC_US in (magic_le, magic_be) or PCAP_MAGIC_NS in (magic_le, magic_be) \
                or PCAP_MAGIC_MODIFIED in (magic_le, magic_be):
            endian = "<" if magic_le in (PCAP_MAGIC_US, PCAP_MAGIC_NS, PCAP_MAGIC_MODIFIED) else ">"
            magic = magic_le if endian == "<" else magic_be
            rest = _read_exact(stream, 20)
            if len(rest) < 20:
                raise CaptureError(f"{name}: truncated pcap file header")
            records = _pcap_records(stream, raw_file, stats, endian, magic, rest, start_cnt, counter,
                                    inner_shard)
            if not bpf and not progress and struct.unpack(endian + "I", rest[16:20])[0] & 0xFFFF \
                    == LINKTYPE_ETHERNET:
                # Capture.replay's walk: the same generator, handing frames to callbacks (never
                # started when the capture is iterated instead, so only one of them reads).
                def walk(frame: FrameHandler, fallback: Callable[[RawPacket], None]) -> Iterator[RawPacket]:
                    return _pcap_records(stream, raw_file, stats, endian, magic, rest, start_cnt, counter,
                                         inner_shard, frame, fallback)

                capture._walk = walk
        else:
            raise CaptureError(f"{name}: not a pcap or pcapng capture (starts with 0x{head.hex()})")
    except CaptureError:
        raw_file.close()
        raise
    except _READ_ERRORS as exc:
        raw_file.close()
        raise CaptureError(f"{name}: cannot read: {exc}") from None
    if not bpf and not progress:
        capture._records = records  # the hot path: no wrapper generator between the reader and the pipeline
    else:
        capture._records = _drive(records, raw_file, stats, name, bpf, progress, start_cnt, capture,
                                  shard if bpf and shard is not None and shard[1] > 1 else None)
    return capture


def _open(name: str) -> tuple[IO[bytes], IO[bytes]]:
    try:
        raw_file = open(name, "rb")  # noqa: SIM115 - closed by _drive
    except OSError as exc:
        raise CaptureError(f"{name}: cannot open: {exc.strerror or exc}") from None
    try:
        magic = raw_file.read(2)
        raw_file.seek(0)
    except OSError as exc:
        raw_file.close()
        raise CaptureError(f"{name}: cannot read: {exc.strerror or exc}") from None
    if magic == b"\x1f\x8b":  # gzip, whatever the file is called
        return raw_file, _GzipStream(raw_file)  # type: ignore[return-value]
    return raw_file, raw_file


class _GzipStream:
    """Streaming gunzip that keeps what it decoded when the file is cut short.

    ``gzip.GzipFile.read`` raises EOFError on a truncated member and loses the bytes it had
    already inflated; a capture copied off a sensor mid-write must still yield its packets.
    Concatenated members are followed. A corrupt stream ends the data (the reader counts it).
    """

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self._z = zlib.decompressobj(wbits=31)
        self._out = bytearray()
        self._eof = False
        self._started = False

    def read(self, n: int) -> bytes:
        while len(self._out) < n and not self._eof:
            data = self.raw.read(CHUNK)
            if not data:
                self._eof = True
                self._out += self._z.flush()
                if not self._out and not self._started:
                    raise OSError("truncated or corrupt gzip stream: nothing could be decompressed")
                break
            try:
                while data:
                    self._out += self._z.decompress(data)
                    data = self._z.unused_data if self._z.eof else b""
                    if self._z.eof:
                        self._z = zlib.decompressobj(wbits=31)
            except zlib.error as exc:
                self._eof = True
                if not self._out and not self._started:
                    raise OSError(f"not a valid gzip stream ({exc})") from None
        self._started = True
        out = bytes(self._out[:n])
        del self._out[:n]
        return out

    def close(self) -> None:
        self.raw.close()


def _read_exact(stream: IO[bytes], n: int) -> bytes:
    out = b""
    while len(out) < n:
        more = stream.read(n - len(out))
        if not more:
            break
        out += more
    return out


def _drive(records: Iterator[RawPacket], raw_file: IO[bytes], stats: Stats, name: str, bpf: str,
           progress: bool, start_cnt: int, capture: Capture, shard: tuple[int, int] | None) -> Iterator[RawPacket]:
    """Numbering, optional BPF filtering, sharding after it, progress and clean-up around a record iterator."""
    line = ProgressLine(os.path.basename(name), _size(raw_file)) if progress else None
    try:
        source: Iterator[RawPacket] = records
        if line is not None and line.enabled:
            source = _with_progress(source, raw_file, line)
        if bpf:
            source = _filtered(source, bpf, stats, start_cnt, capture)
        if shard is not None:
            source = _sharded(source, *shard)
        yield from source
    finally:
        if line is not None:
            line.close(_tell(raw_file))
        close = getattr(records, "close", None)
        if close is not None:
            close()


def _with_progress(source: Iterator[RawPacket], raw_file: IO[bytes], line: ProgressLine) -> Iterator[RawPacket]:
    n = 0
    for raw in source:
        n += 1
        if not n & 0x3FFF:
            line.update(_tell(raw_file))
        yield raw


def _sharded(source: Iterator[RawPacket], index: int, n: int) -> Iterator[RawPacket]:
    """The frames of one shard (for the paths where the record walk cannot skip them itself)."""
    for raw in source:
        data = raw.data
        if shard_at(data, 0, len(data), raw.linktype, n) == index:
            yield raw


def _filtered(source: Iterator[RawPacket], expr: str, stats: Stats, start_cnt: int,
              capture: Capture) -> Iterator[RawPacket]:
    programs: dict[int, BpfProgram] = {}
    n = start_cnt
    dropped = 0
    try:
        for raw in source:
            prog = programs.get(raw.linktype)
            if prog is None:
                prog = programs[raw.linktype] = BpfProgram(expr, raw.linktype)
            if not prog.matches(raw.data, raw.wire_len):
                dropped += 1
                continue
            n += 1
            raw.pcap_cnt = n
            yield raw
    finally:
        capture.last_cnt = n
        if dropped:
            stats.incr("capture.pcap.bpf_filtered", dropped)


def _size(f: IO[bytes]) -> int:
    try:
        return os.fstat(f.fileno()).st_size
    except (OSError, ValueError):
        return 0


def _tell(f: IO[bytes]) -> int:
    try:
        return f.tell()
    except (OSError, ValueError):
        return 0


# ------------------------------------------------------------------ classic pcap


def _pcap_records(stream: IO[bytes], raw_file: IO[bytes], stats: Stats, endian: str, magic: int, rest: bytes,
                  start_cnt: int, counter: Capture | None, shard: tuple[int, int] | None,
                  frame: FrameHandler | None = None,
                  fallback: Callable[[RawPacket], None] | None = None) -> Generator[RawPacket, None, None]:
    """The records as RawPackets; with ``frame`` (Capture.replay), each record is offered to
    ``frame`` in the read buffer instead, and only those it declines are built and handed to
    ``fallback``: then nothing is yielded."""
    _vmaj, _vmin, _zone, _sigfigs, snaplen, linkfield = struct.unpack(endian + "HHiIII", rest)
    linktype = linkfield & 0xFFFF  # upper bits carry FCS information
    scale = 1e-9 if magic == PCAP_MAGIC_NS else 1e-6
    hdr_len = 24 if magic == PCAP_MAGIC_MODIFIED else 16
    snap = snaplen if 0 < snaplen <= MAX_RECORD else MAX_RECORD
    unpack_from = struct.Struct(endian + "IIII").unpack_from
    shard_index, shard_n = shard if shard is not None else (0, 0)
    # Sharding, inlined for the common frame (untagged Ethernet + IPv4): shard_of's hash of
    # the two addresses; any other frame (and every frame of another link type) asks shard_at.
    # Each worker tests every record of the file, most of them to skip it: the test is kept short.
    ether_v4, v4_min = _ETHER_V4, ETHER_V4_MIN if linktype == LINKTYPE_ETHERNET else _NEVER
    halves, parity_bits = shard_n == 2, PAIR_PARITY_BITS
    buf = b""
    pos = 0
    n = start_cnt
    exceeded = bad = 0
    try:
        while True:
            end = len(buf)
            last = end - hdr_len  # the last offset where a record header fits
            while pos <= last:
                sec, frac, caplen, wire = unpack_from(buf, pos)
                start = pos + hdr_len
                nxt = start + caplen
                # One test for the common record (sane, whole in the buffer); the others here.
                if nxt > end or not 0 < caplen <= snap:
                    if caplen == 0:
                        bad += 1
                        pos = nxt
                        continue
                    if caplen > MAX_RECORD:
                        bad += 1
                        return
                    if nxt > end:
                        break
                    exceeded += 1  # longer than the header's snaplen, but it frames
                n += 1
                if shard_n:
                    tag, pair = ether_v4(buf, start) if caplen >= v4_min else _NOT_V4
                    if tag >> 12 == ETHER_V4_TAG:  # shard_of, inlined for two workers
                        if halves:
                            if (pair & parity_bits).bit_count() & 1 != shard_index:
                                pos = nxt
                                continue
                        elif v4_pair_shard(pair, shard_n) != shard_index:
                            pos = nxt
                            continue
                    elif shard_at(buf, start, caplen, linktype, shard_n) != shard_index:
                        pos = nxt
                        continue
                ts = sec + frac * scale
                if wire < caplen:
                    wire = caplen
                if frame is None:
                    yield RawPacket(ts, linktype, buf[start:nxt], n, "", wire)
                elif not frame(buf, start, caplen, wire, ts, n):
                    fallback(RawPacket(ts, linktype, buf[start:nxt], n, "", wire))  # type: ignore[misc]
                pos = nxt
            try:
                more = stream.read(CHUNK)
            except _READ_ERRORS:
                more = b""
            if not more:
                if pos < end:
                    stats.incr("capture.pcap.truncated")
                return
            buf = buf[pos:] + more if pos < end else more
            pos = 0
    finally:
        if counter is not None:
            counter.last_cnt = n
        if bad:
            stats.incr("capture.pcap.bad_record", bad)
        if exceeded:
            stats.incr("capture.pcap.snaplen_exceeded", exceeded)
        raw_file.close()


# ------------------------------------------------------------------ pcapng


class _Iface:
    __slots__ = ("linktype", "snaplen", "divisor", "multiplier", "offset", "name")

    def __init__(self, linktype: int, snaplen: int, name: str) -> None:
        self.linktype = linktype
        self.snaplen = snaplen
        self.divisor = 1_000_000  # default resolution: microseconds
        self.multiplier = 0.0  # for binary resolutions (2^-n): seconds per tick
        self.offset = 0
        self.name = name


def _pcapng_start(name: str, stream: IO[bytes], head: bytes) -> tuple[bytes, str]:
    """The first 12 bytes of the section header (``head`` and 8 more) and the section's byte order."""
    first = head + _read_exact(stream, 8)
    if len(first) < 12:
        raise CaptureError(f"{name}: truncated pcapng section header")
    bom = first[8:12]
    if bom == b"\x4d\x3c\x2b\x1a":
        return first, "<"
    if bom == b"\x1a\x2b\x3c\x4d":
        return first, ">"
    raise CaptureError(f"{name}: not a pcapng capture (bad byte-order magic 0x{bom.hex()})")


def _pcapng_blocks(stream: IO[bytes], raw_file: IO[bytes], stats: Stats, first: bytes, endian: str,
                   start_cnt: int, counter: Capture | None, shard: tuple[int, int] | None = None,
                   frame: FrameHandler | None = None,
                   fallback: Callable[[RawPacket], None] | None = None) -> Generator[RawPacket, None, None]:
    """The packets of every section as RawPackets; with ``frame`` (Capture.replay), each packet is
    offered to ``frame`` in the read buffer instead, and only those it declines are built and
    handed to ``fallback``: then nothing is yielded. ``shard=(index, n)``: other shards' packets
    are skipped in the buffer (numbered all the same), as in :func:`_pcap_records`."""
    buf = first
    pos = 0
    n = start_cnt
    bad = 0
    last_ts = 0.0
    ifaces: list[_Iface] = []
    nif = 0
    u32x2 = struct.Struct(endian + "II").unpack_from
    epb_head = struct.Struct(endian + "IIIIIII").unpack_from  # block type and length + the EPB fields
    shard_index, shard_n = shard if shard is not None else (0, 0)
    ether_v4, v4_min = _ETHER_V4, _NEVER  # as in _pcap_records; v4_min follows the interface's link type
    halves, parity_bits = shard_n == 2, PAIR_PARITY_BITS
    epb_type, max_record, max_block = PCAPNG_EPB, MAX_RECORD, MAX_BLOCK  # locals: cheaper per packet
    # The interface of the last fast-path block, in locals (most files have one interface).
    cur = -1
    linktype, iface = 0, ""
    divisor, multiplier, offset, plain = 1_000_000, 0.0, 0, True
    try:
        while True:
            end = len(buf)
            while pos + 12 <= end:
                # Fast path: Enhanced Packet Blocks that frame (whole in the buffer) and hold a
                # sane packet of a known interface; exactly the blocks that deliver a packet in
                # the general path below, which takes every other block (and a block header too
                # close to the buffer's end to unpack 28 bytes), then comes back here.
                last = end - 28  # the last offset where an EPB's fixed fields fit
                while pos <= last:
                    btype, blen, ifid, tsh, tsl, caplen, wire = epb_head(buf, pos)
                    nxt = pos + blen
                    if btype != epb_type or not (0 < caplen <= max_record and caplen + 32 <= blen <= max_block) \
                            or blen & 3 or nxt > end:
                        break
                    if ifid != cur:  # (``cur`` is always a known interface of this section)
                        if ifid >= nif:
                            break
                        cur = ifid
                        fast_if = ifaces[ifid]
                        linktype, iface = fast_if.linktype, fast_if.name
                        v4_min = ETHER_V4_MIN if linktype == LINKTYPE_ETHERNET else _NEVER
                        divisor, multiplier, offset = fast_if.divisor, fast_if.multiplier, fast_if.offset
                        plain = not multiplier and not offset
                    ticks = (tsh << 32) | tsl
                    # ``x + 0`` is x for the non-negative float x: ``plain`` is the general formula.
                    last_ts = ticks / divisor if plain else \
                        (ticks * multiplier if multiplier else ticks / divisor) + offset
                    n += 1
                    start = pos + 28
                    pos = nxt
                    if shard_n:
                        tag, pair = ether_v4(buf, start) if caplen >= v4_min else _NOT_V4
                        if tag >> 12 == ETHER_V4_TAG:  # shard_of, inlined as in _pcap_records
                            if halves:
                                if (pair & parity_bits).bit_count() & 1 != shard_index:
                                    continue
                            elif v4_pair_shard(pair, shard_n) != shard_index:
                                continue
                        elif shard_at(buf, start, caplen, linktype, shard_n) != shard_index:
                            continue
                    if wire < caplen:
                        wire = caplen
                    if frame is None:
                        yield RawPacket(last_ts, linktype, buf[start:start + caplen], n, iface, wire)
                    elif not frame(buf, start, caplen, wire, last_ts, n, iface, linktype):
                        fallback(RawPacket(last_ts, linktype, buf[start:start + caplen], n,  # type: ignore[misc]
                                           iface, wire))
                else:
                    if pos + 12 > end:
                        break  # the outer loop: read more
                # General path: every other block, one at a time.
                btype, blen = u32x2(buf, pos)
                if btype == PCAPNG_SHB:
                    # A new section may switch byte order; its length field is read in that order.
                    bom = buf[pos + 8:pos + 12]
                    endian = "<" if bom == b"\x4d\x3c\x2b\x1a" else ">" if bom == b"\x1a\x2b\x3c\x4d" else ""
                    if not endian:
                        bad += 1
                        return
                    u32x2 = struct.Struct(endian + "II").unpack_from
                    epb_head = struct.Struct(endian + "IIIIIII").unpack_from
                    btype, blen = u32x2(buf, pos)
                    ifaces = []
                    nif = 0
                    cur = -1
                if blen < 12 or blen & 3 or blen > MAX_BLOCK:
                    bad += 1
                    return
                nxt = pos + blen
                if nxt > end:
                    break
                start = 0  # where the packet of this block starts; 0: none
                if btype == PCAPNG_EPB:
                    bad += 1  # the fast path took every one that frames a sane packet
                elif btype == PCAPNG_SPB:
                    if blen < 16 or not ifaces:
                        bad += 1
                    else:
                        (wire,) = struct.unpack_from(endian + "I", buf, pos + 8)
                        ifc = ifaces[0]
                        caplen = min(wire, blen - 16, ifc.snaplen or MAX_RECORD, MAX_RECORD)
                        if caplen <= 0:
                            bad += 1
                        else:
                            start = pos + 12
                elif btype == PCAPNG_OPB:
                    if blen < 32:
                        bad += 1
                    else:
                        ifid, _drops, tsh, tsl, caplen, wire = struct.unpack_from(endian + "HHIIII", buf, pos + 8)
                        if ifid >= nif or not 0 < caplen <= min(blen - 32, MAX_RECORD):
                            bad += 1
                        else:
                            ifc = ifaces[ifid]
                            ticks = (tsh << 32) | tsl
                            last_ts = (ticks * ifc.multiplier if ifc.multiplier else ticks / ifc.divisor) + ifc.offset
                            start = pos + 28
                elif btype == PCAPNG_IDB:
                    if blen < 20:
                        bad += 1
                        return
                    ifaces.append(_parse_idb(buf, pos, blen, endian, nif))
                    nif += 1
                # Other blocks (name resolution, statistics, secrets, custom) carry no packets.
                pos = nxt
                if not start:
                    continue
                n += 1
                if shard_n and shard_at(buf, start, caplen, ifc.linktype, shard_n) != shard_index:
                    continue
                if wire < caplen:
                    wire = caplen
                if frame is None:
                    yield RawPacket(last_ts, ifc.linktype, buf[start:start + caplen], n, ifc.name, wire)
                elif not frame(buf, start, caplen, wire, last_ts, n, ifc.name, ifc.linktype):
                    fallback(RawPacket(last_ts, ifc.linktype, buf[start:start + caplen], n,  # type: ignore[misc]
                                       ifc.name, wire))
            try:
                more = stream.read(CHUNK)
            except _READ_ERRORS:
                more = b""
            if not more:
                if pos < end:
                    stats.incr("capture.pcap.truncated")
                return
            buf = buf[pos:] + more if pos < end else more
            pos = 0
    finally:
        if counter is not None:
            counter.last_cnt = n
        if bad:
            stats.incr("capture.pcap.bad_record", bad)
        raw_file.close()


def _parse_idb(buf: bytes, pos: int, blen: int, endian: str, index: int) -> _Iface:
    linktype, _reserved, snaplen = struct.unpack_from(endian + "HHI", buf, pos + 8)
    ifc = _Iface(linktype, snaplen, "")
    opt = pos + 16
    stop = pos + blen - 4
    opt_hdr = struct.Struct(endian + "HH").unpack_from
    while opt + 4 <= stop:
        code, length = opt_hdr(buf, opt)
        value = buf[opt + 4:opt + 4 + length]
        if code == 0 or opt + 4 + length > stop:
            break
        if code == IDB_OPT_TSRESOL and length >= 1:
            res = value[0]
            if res & 0x80:
                exp = res & 0x7F
                ifc.multiplier = 2.0 ** -exp if exp < 64 else 0.0
            elif res <= 18:
                ifc.divisor = 10**res
        elif code == IDB_OPT_TSOFFSET and length >= 8:
            ifc.offset = struct.unpack_from(endian + "q", value)[0]
        elif code == IDB_OPT_NAME:
            ifc.name = value.split(b"\0", 1)[0].decode("utf-8", "replace")[:64]
        opt += 4 + ((length + 3) & ~3)
    if not ifc.name:
        ifc.name = f"if{index}"
    return ifc

