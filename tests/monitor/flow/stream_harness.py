"""Test harness: a capture through read_capture -> Decoder -> FlowTable -> TcpReassembler,
and the tshark oracle (``follow,tcp,raw`` streams, ``conv,tcp`` counts) to compare it with.

When the capture/decoder modules are missing (parallel development) packets are read and
decoded with dpkt instead; the flow and stream stages are always the real ones.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from monitor.config import Config, StreamConfig, default_config
from monitor.flow.netset import NetSet
from monitor.flow.reassembly import TcpReassembler
from monitor.flow.table import FlowTable
from monitor.model import PROTO_TCP, TO_CLIENT, TO_SERVER, Flow, Packet
from monitor.stats import Stats

HAVE_TSHARK = shutil.which("tshark") is not None


def stream_config(**stream: Any) -> Config:
    """Default config with ``stream`` overrides (``overlap_policy="last"``, ...)."""
    cfg = default_config()
    return dataclasses.replace(cfg, stream=dataclasses.replace(StreamConfig(), **stream))


@dataclass
class FlowResult:
    flow: Flow
    data: list[bytearray] = field(default_factory=lambda: [bytearray(), bytearray()])
    # The stream with each gap written as tshark's follow output writes it (see gap_marker).
    marked: list[bytearray] = field(default_factory=lambda: [bytearray(), bytearray()])
    gaps: list[list[int]] = field(default_factory=lambda: [[], []])
    overlaps: list[tuple[int, int, bytes, bytes]] = field(default_factory=list)  # dir, offset, kept, other
    anomalies: list[tuple[int, str]] = field(default_factory=list)
    depth: list[int] = field(default_factory=list)
    order: int = 0  # creation order

    def endpoint(self, direction: int) -> str:
        src, sport, _, _ = self.flow.endpoints(direction)
        return f"{src}:{sport}" if ":" not in src else f"[{src}]:{sport}"


def gap_marker(length: int) -> bytes:
    """What ``tshark -z follow,tcp,raw`` prints in place of ``length`` missing bytes."""
    return b"[%d bytes missing in capture file]\x00" % length


class Recorder:
    """A StreamSink that keeps everything it is told, per flow."""

    def __init__(self) -> None:
        self.results: dict[int, FlowResult] = {}

    def result(self, flow: Flow) -> FlowResult:
        r = self.results.get(flow.flow_id)
        if r is None:
            r = self.results[flow.flow_id] = FlowResult(flow, order=len(self.results))
        return r

    def on_data(self, flow: Flow, direction: int, data: bytes, ts: float) -> None:
        r = self.result(flow)
        r.data[direction] += data
        r.marked[direction] += data

    def on_gap(self, flow: Flow, direction: int, length: int, ts: float) -> None:
        r = self.result(flow)
        r.gaps[direction].append(length)
        r.marked[direction] += gap_marker(length)

    def on_overlap(self, flow: Flow, direction: int, offset: int, kept: bytes, other: bytes, ts: float) -> None:
        self.result(flow).overlaps.append((direction, offset, kept, other))

    def on_anomaly(self, flow: Flow, direction: int, kind: str, detail: str) -> None:
        self.result(flow).anomalies.append((direction, kind))

    def on_depth(self, flow: Flow, direction: int) -> None:
        self.result(flow).depth.append(direction)


@dataclass
class Run:
    flows: list[FlowResult]
    stats: Stats
    reassembler: TcpReassembler
    table: FlowTable

    def tcp(self) -> list[FlowResult]:
        return [r for r in self.flows if r.flow.proto == PROTO_TCP]

    def one(self) -> FlowResult:
        flows = self.tcp()
        assert len(flows) == 1, f"expected one TCP flow, got {len(flows)}"
        return flows[0]


def packets(path: str | Path, cfg: Config, stats: Stats) -> Iterator[Packet]:
    """Decoded TCP/UDP packets of a capture (the real reader and decoder when present)."""
    try:
        from monitor.capture.pcapfile import read_capture
        from monitor.decode.decoder import Decoder
    except ImportError:  # pragma: no cover - parallel development fallback
        yield from _dpkt_packets(path)
        return
    decoder = Decoder(cfg, stats, lambda kind, detail, raw: stats.incr("test.anomaly", kind=kind))
    for raw in read_capture(str(path), stats=stats):
        pkt = decoder.decode(raw)
        if pkt is not None:
            yield pkt


def run(path: str | Path, cfg: Config | None = None, *, protected: list[str] | None = None,
        tick: float = 1.0) -> Run:
    """Replay a capture through the flow table and reassembler, as the pipeline does."""
    cfg = cfg or default_config()
    stats = Stats()
    rec = Recorder()
    table = FlowTable(cfg, stats, NetSet(protected or cfg.networks.protected))
    reasm = TcpReassembler(cfg, stats, rec)
    last_tick = None

    def finish(flow: Flow, ts: float) -> None:
        rec.result(flow)
        if flow.proto == PROTO_TCP:
            reasm.close(flow, ts)

    ts = 0.0
    for pkt in packets(path, cfg, stats):
        ts = pkt.ts
        flow, direction, _ = table.lookup(pkt)
        for ended in table.ended:
            finish(ended, ts)
        table.ended.clear()
        rec.result(flow)
        if pkt.proto == PROTO_TCP:
            reasm.packet(flow, direction, pkt)
        if last_tick is None or ts - last_tick >= tick:
            last_tick = ts
            reasm.check_all_timeouts(ts)
            for expired in table.expire(ts):
                finish(expired, ts)
    for flow in table.flush():
        finish(flow, ts)
    flows = sorted(rec.results.values(), key=lambda r: r.order)
    return Run(flows, stats, reasm, table)


# ---------------------------------------------------------------------- tshark oracle


@dataclass
class OracleStream:
    index: int
    nodes: tuple[str, str]  # "addr:port" of node 0 and node 1
    data: tuple[bytes, bytes]  # bytes sent by node 0, by node 1


def _tshark(path: str | Path, *args: str) -> str:
    out = subprocess.run(["tshark", "-n", "-r", str(path), *args], capture_output=True, text=True,
                         timeout=120, check=True)
    return out.stdout


def tshark_streams(path: str | Path) -> list[OracleStream]:
    """Every TCP stream as ``tshark -q -z follow,tcp,raw,N`` prints it."""
    ids = sorted({int(x) for x in _tshark(path, "-T", "fields", "-e", "tcp.stream").split() if x.isdigit()})
    if not ids:
        return []
    args = ["-q"]
    for i in ids:
        args += ["-z", f"follow,tcp,raw,{i}"]
    text = _tshark(path, *args)
    out = []
    for block in text.split("Follow: tcp,raw")[1:]:
        m = re.search(r"Filter: tcp.stream eq (\d+)", block)
        n0 = re.search(r"Node 0: (\S+)", block)
        n1 = re.search(r"Node 1: (\S+)", block)
        if not (m and n0 and n1):
            continue
        data = [bytearray(), bytearray()]
        for line in block.splitlines():
            if not line or line.startswith(("=", "Filter", "Node")):
                continue
            side = 1 if line.startswith("\t") else 0
            hexpart = line.strip()
            if re.fullmatch(r"[0-9a-fA-F]+", hexpart):
                data[side] += bytes.fromhex(hexpart)
        out.append(OracleStream(int(m.group(1)), (n0.group(1), n1.group(1)), (bytes(data[0]), bytes(data[1]))))
    return out


@dataclass
class OracleConv:
    a: str
    b: str
    frames_ab: int
    bytes_ab: tuple[int, int]  # (value, unit it was rounded to)
    frames_ba: int
    bytes_ba: tuple[int, int]
    start: float  # relative start, to pair conversations with the same endpoints in order


def tshark_convs(path: str | Path) -> list[OracleConv]:
    """``tshark -q -z conv,tcp``: per conversation frames/bytes in each direction."""
    text = _tshark(path, "-q", "-z", "conv,tcp")
    out = []
    row = re.compile(r"^(\S+)\s+<->\s+(\S+)\s+(\d+)\s+([\d,]+)\s+(\w+)\s+(\d+)\s+([\d,]+)\s+(\w+)"
                     r"\s+\d+\s+[\d,]+\s+\w+\s+([\d.]+)")
    for line in text.splitlines():
        m = row.match(line)
        if not m:
            continue
        to_a = (int(m.group(4).replace(",", "")) * _unit(m.group(5)), _unit(m.group(5)))
        to_b = (int(m.group(7).replace(",", "")) * _unit(m.group(8)), _unit(m.group(8)))
        # Columns: "<-" (B to A) then "->" (A to B).
        out.append(OracleConv(m.group(1), m.group(2), int(m.group(6)), to_b, int(m.group(3)), to_a,
                              float(m.group(9))))
    return sorted(out, key=lambda c: c.start)


def _unit(word: str) -> int:
    return {"bytes": 1, "kB": 1000, "MB": 1000**2, "GB": 1000**3}.get(word, 1)


def endpoint_text(addr: bytes, port: int) -> str:
    ip = str(ipaddress.ip_address(addr))
    return f"{ip}:{port}"


def _pairing(run_: Run) -> dict[frozenset[str], list[FlowResult]]:
    """Our TCP flows by endpoint pair, in order of creation (tshark numbers streams the same way)."""
    ours: dict[frozenset[str], list[FlowResult]] = {}
    for r in run_.tcp():
        ours.setdefault(frozenset((r.endpoint(TO_SERVER), r.endpoint(TO_CLIENT))), []).append(r)
    return ours


def expand(marked: bytes) -> tuple[bytes, bytes]:
    """A marked stream at stream offsets: (bytes with gaps zero-filled, mask 1=data 0=gap)."""
    out = bytearray()
    mask = bytearray()
    pos = 0
    for m in re.finditer(rb"\[(\d+) bytes missing in capture file\]\x00", marked):
        out += marked[pos:m.start()]
        mask += b"\x01" * (m.start() - pos)
        n = int(m.group(1))
        out += bytes(n)
        mask += bytes(n)
        pos = m.end()
    out += marked[pos:]
    mask += b"\x01" * (len(marked) - pos)
    return bytes(out), bytes(mask)


def _differs_outside_overlaps(r: FlowResult, d: int, got: bytes, want: bytes) -> str | None:
    """Where tshark resolved an overlap the other way, its bytes must be our ``other`` version."""
    ours, omask = expand(got)
    theirs, tmask = expand(want)
    if omask != tmask:
        return f"gaps differ (first at {_first_diff(omask, tmask)})"
    other = {}
    for od, offset, _kept, alt in r.overlaps:
        if od == d:
            for k, b in enumerate(alt):
                other.setdefault(offset + k, set()).add(b)
    for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        if a != b and b not in other.get(i, ()):
            return f"byte {i} differs outside any reported overlap"
    return None


def compare_streams(path: str | Path, run_: Run | None = None, *, trailing_gaps: bool = False,
                    other_ok: bool = False) -> list[str]:
    """Differences between our streams and ``follow,tcp,raw`` (empty: identical).

    Gaps are compared too: ours are written with tshark's marker. tshark only marks a gap
    that data follows; a gap we report at the end of a stream (bytes before a FIN that the
    capture missed) is left out of the comparison unless ``trailing_gaps``.
    With ``other_ok``, bytes may differ where we reported an overlap with different data and
    tshark shows our ``other`` version (tshark's follow does not resolve overlaps between
    queued segments by arrival order).
    """
    run_ = run_ or run(path)
    problems: list[str] = []
    ours = _pairing(run_)
    for st in sorted(tshark_streams(path), key=lambda st: st.index):
        candidates = ours.get(frozenset(_norm(n) for n in st.nodes), [])
        if not candidates:
            problems.append(f"stream {st.index} {st.nodes}: no flow of ours")
            continue
        r = candidates.pop(0)
        for node, want in zip(st.nodes, st.data, strict=True):
            d = TO_SERVER if r.endpoint(TO_SERVER) == _norm(node) else TO_CLIENT
            got = bytes(r.marked[d])
            if not trailing_gaps:
                got = re.sub(rb"\[\d+ bytes missing in capture file\]\x00$", b"", got)
            if got == want:
                continue
            if other_ok:
                why = _differs_outside_overlaps(r, d, got, want)
                if why is None:
                    continue
                problems.append(f"stream {st.index} from {node}: {why}")
                continue
            problems.append(f"stream {st.index} from {node}: {len(got)} bytes, tshark {len(want)}; "
                            f"first difference at {_first_diff(got, want)}")
    for rest in ours.values():
        for r in rest:
            if any(r.data):
                problems.append(f"flow {r.endpoint(0)} -> {r.endpoint(1)} has data but no tshark stream")
    return problems


def compare_counts(path: str | Path, run_: Run | None = None) -> list[str]:
    """Differences between our per-flow, per-direction packet and byte counts and tshark's.

    Exact figures come from the frames tshark assigns to each ``tcp.stream`` (frame.len
    summed per sender); ``conv,tcp`` is checked as well (its byte column is rounded to kB/MB
    above 10 kB, so those are compared within the rounding).
    """
    run_ = run_ or run(path)
    problems: list[str] = []
    per_stream: dict[int, dict[str, list[int]]] = {}
    pair: dict[int, frozenset[str]] = {}
    fields = _tshark(path, "-Y", "tcp", "-T", "fields", "-E", "separator=/t", "-e", "tcp.stream",
                     "-e", "ip.src", "-e", "ipv6.src", "-e", "tcp.srcport", "-e", "ip.dst", "-e", "ipv6.dst",
                     "-e", "tcp.dstport", "-e", "frame.len")
    for line in fields.splitlines():
        cols = line.split("\t")
        if len(cols) != 8 or not cols[0].isdigit() or not cols[7].isdigit():
            continue
        src = _norm(f"{(cols[1] or cols[2]).split(',')[-1]}:{cols[3].split(',')[-1]}")
        dst = _norm(f"{(cols[4] or cols[5]).split(',')[-1]}:{cols[6].split(',')[-1]}")
        index = int(cols[0])
        pair.setdefault(index, frozenset((src, dst)))
        acc = per_stream.setdefault(index, {}).setdefault(src, [0, 0])
        acc[0] += 1
        acc[1] += int(cols[7])
    ours = _pairing(run_)
    matched: dict[tuple[str, ...], list[FlowResult]] = {}
    for index in sorted(per_stream):
        senders = per_stream[index]
        candidates = ours.get(pair[index], [])
        if not candidates:
            problems.append(f"stream {index} {sorted(pair[index])}: no flow of ours")
            continue
        r = candidates.pop(0)
        matched.setdefault(tuple(sorted(pair[index])), []).append(r)
        for d in (TO_SERVER, TO_CLIENT):
            want = senders.get(r.endpoint(d), [0, 0])
            got = [r.flow.pkts[d], r.flow.bytes[d]]
            if got != want:
                problems.append(f"stream {index} from {r.endpoint(d)}: ours {got[0]} pkts {got[1]} bytes, "
                                f"tshark {want[0]} pkts {want[1]} bytes")
    for c in tshark_convs(path):
        a, b = _norm(c.a), _norm(c.b)
        flows = matched.get(tuple(sorted((a, b))), [])
        if not flows:
            problems.append(f"conv {a} <-> {b}: no flow of ours")
            continue
        r = flows.pop(0)
        for src, frames, (nbytes, unit) in ((a, c.frames_ab, c.bytes_ab), (b, c.frames_ba, c.bytes_ba)):
            d = TO_SERVER if r.endpoint(TO_SERVER) == src else TO_CLIENT
            got = (r.flow.pkts[d], r.flow.bytes[d])
            if got[0] != frames or abs(got[1] - nbytes) >= unit:
                problems.append(f"conv from {src}: ours {got[0]} pkts {got[1]} bytes, tshark {frames} pkts {nbytes} bytes")
    return problems


def _norm(node: str) -> str:
    """tshark prints IPv6 endpoints as addr:port without brackets; ours use [addr]:port."""
    if node.count(":") > 1 and not node.startswith("["):
        addr, _, port = node.rpartition(":")
        return f"[{ipaddress.ip_address(addr)}]:{port}"
    return node


def _first_diff(a: bytes, b: bytes) -> int:
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return min(len(a), len(b))


# ---------------------------------------------------------------------- dpkt fallback


def _dpkt_packets(path: str | Path) -> Iterator[Packet]:  # pragma: no cover - fallback only
    import dpkt

    from monitor.model import RawPacket

    with open(path, "rb") as f:
        head = f.read(4)
        f.seek(0)
        reader: Any = dpkt.pcapng.Reader(f) if head == b"\x0a\x0d\x0d\x0a" else dpkt.pcap.Reader(f)
        linktype = reader.datalink()
        for n, (ts, buf) in enumerate(reader, 1):
            try:
                if linktype == 1:
                    eth = dpkt.ethernet.Ethernet(buf)
                    ip = eth.data
                    vlan = tuple(t.id for t in getattr(eth, "vlan_tags", []) or [])
                elif linktype in (0, 108):
                    ip = dpkt.loopback.Loopback(buf).data
                    vlan = ()
                elif linktype == 113:
                    ip = dpkt.sll.SLL(buf).data
                    vlan = ()
                else:
                    ip = dpkt.ip.IP(buf) if buf[0] >> 4 == 4 else dpkt.ip6.IP6(buf)
                    vlan = ()
            except (dpkt.UnpackError, IndexError):
                continue
            if not isinstance(ip, (dpkt.ip.IP, dpkt.ip6.IP6)):
                continue
            tcp = ip.data
            version = 4 if isinstance(ip, dpkt.ip.IP) else 6
            raw = RawPacket(ts=float(ts), linktype=linktype, data=buf, pcap_cnt=n, wire_len=len(buf))
            if isinstance(tcp, dpkt.tcp.TCP):
                yield Packet(float(ts), n, version, ip.src, ip.dst, 6, tcp.sport, tcp.dport, bytes(tcp.data),
                             tcp_flags=tcp.flags, seq=tcp.seq, ack=tcp.ack, urg_ptr=tcp.urp, vlan=vlan,
                             wire_len=len(buf), raw=raw)
            elif isinstance(tcp, dpkt.udp.UDP):
                yield Packet(float(ts), n, version, ip.src, ip.dst, 17, tcp.sport, tcp.dport, bytes(tcp.data),
                             vlan=vlan, wire_len=len(buf), raw=raw)
