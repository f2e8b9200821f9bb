#!/usr/bin/env python3
"""Craft pcaps/stream-evasions.pcap: TCP segmentation evasions of one HTTP upload, one flow each.

Every flow uploads the same request (a POST whose body carries a protected-document marker) from
10.77.0.1 to 10.77.0.2:80, split so that a naive per-packet matcher misses it:

  port 41001  1-byte segments
  port 41002  segments out of order
  port 41003  every segment sent twice, plus a stale copy of the first one at the end
  port 41004  an overlapping segment with different bytes ("decoy" over the marker; first wins)
  port 41005  a segment lost by the capture (the server acknowledges past it)
  port 41006  capture starts mid-stream (no handshake; request line already gone)

Deterministic (fixed ISNs, timestamps); run ``python3 pcaps/make_stream_evasions.py`` to
regenerate. The expectations live in tests/monitor/flow/test_flow_evasions.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether
from scapy.utils import wrpcap

CLIENT, SERVER = "10.77.0.1", "10.77.0.2"
CMAC, SMAC = "02:77:00:00:00:01", "02:77:00:00:00:02"
MARKER = "PROTECTED-DOC-7731 取扱注意"
BODY = f"report={MARKER}&page=3".encode()
REQUEST = (b"POST /upload HTTP/1.1\r\nHost: 10.77.0.2\r\nContent-Type: application/x-www-form-urlencoded\r\n"
           b"Content-Length: " + str(len(BODY)).encode() + b"\r\n\r\n" + BODY)
RESPONSE = b"HTTP/1.1 204 No Content\r\n\r\n"
ISN_C, ISN_S = 100_000, 900_000


class Conv:
    """Builds the frames of one connection with consistent sequence numbers."""

    def __init__(self, cport: int, t0: float) -> None:
        self.cport = cport
        self.t = t0
        self.frames: list = []

    def _frame(self, to_server: bool, flags: str, seq: int, ack: int, payload: bytes = b""):
        if to_server:
            pkt = Ether(src=CMAC, dst=SMAC) / IP(src=CLIENT, dst=SERVER, id=len(self.frames) + 1) / TCP(
                sport=self.cport, dport=80, flags=flags, seq=seq, ack=ack, window=65535)
        else:
            pkt = Ether(src=SMAC, dst=CMAC) / IP(src=SERVER, dst=CLIENT, id=len(self.frames) + 1) / TCP(
                sport=80, dport=self.cport, flags=flags, seq=seq, ack=ack, window=65535)
        if payload:
            pkt = pkt / payload
        self.t += 0.001
        pkt.time = self.t
        self.frames.append(pkt)

    def c(self, off: int, payload: bytes = b"", flags: str = "PA", ack_off: int = 0) -> None:
        self._frame(True, flags, ISN_C + 1 + off, ISN_S + 1 + ack_off, payload)

    def s(self, off: int, payload: bytes = b"", flags: str = "PA", ack_off: int = 0) -> None:
        self._frame(False, flags, ISN_S + 1 + off, ISN_C + 1 + ack_off, payload)

    def handshake(self) -> None:
        self._frame(True, "S", ISN_C, 0)
        self._frame(False, "SA", ISN_S, ISN_C + 1)
        self._frame(True, "A", ISN_C + 1, ISN_S + 1)

    def finish(self, req_len: int = len(REQUEST)) -> None:
        self.s(0, b"", "A", ack_off=req_len)
        self.s(0, RESPONSE, "PA", ack_off=req_len)
        self.c(req_len, b"", "FA", ack_off=len(RESPONSE))
        self.s(len(RESPONSE), b"", "FA", ack_off=req_len + 1)
        self.c(req_len + 1, b"", "A", ack_off=len(RESPONSE) + 1)


def chunks(data: bytes, size: int) -> list[tuple[int, bytes]]:
    return [(i, data[i:i + size]) for i in range(0, len(data), size)]


def build() -> list:
    frames: list = []
    t = 1_700_000_000.0

    # 1. One byte per segment.
    c = Conv(41001, t)
    c.handshake()
    for off, piece in chunks(REQUEST, 1):
        c.c(off, piece)
    c.finish()
    frames += c.frames

    # 2. Out of order: 16-byte segments sent in a shuffled but fixed order.
    c = Conv(41002, t + 10)
    c.handshake()
    segs = chunks(REQUEST, 16)
    order = list(range(len(segs)))
    order = order[1::2] + order[0::2]  # odd ones first, then the even ones
    for k in order:
        c.c(*segs[k])
    c.finish()
    frames += c.frames

    # 3. Duplicates: every 32-byte segment twice, and the first one again at the very end.
    c = Conv(41003, t + 20)
    c.handshake()
    for off, piece in chunks(REQUEST, 32):
        c.c(off, piece)
        c.c(off, piece)
    c.c(0, REQUEST[:32])
    c.finish()
    frames += c.frames

    # 4. Overlap with different data: the part holding the marker is sent, then a "decoy" copy of
    #    the same range. First-wins keeps the marker; the decoy is the other version.
    c = Conv(41004, t + 30)
    c.handshake()
    at = REQUEST.index(MARKER.encode())
    c.c(0, REQUEST[:at])
    real = REQUEST[at:at + 18]
    c.c(at, real)
    c.c(at, b"x" * len(real))
    c.c(at + 18, REQUEST[at + 18:])
    c.finish()
    frames += c.frames

    # 5. A lost segment: bytes 64..128 never captured; the server acknowledges everything.
    c = Conv(41005, t + 40)
    c.handshake()
    c.c(0, REQUEST[:64])
    c.c(128, REQUEST[128:])
    c.finish()
    frames += c.frames

    # 6. Mid-stream: the capture starts after the handshake and the request line.
    c = Conv(41006, t + 50)
    start = REQUEST.index(b"Content-Type")
    for off, piece in chunks(REQUEST[start:], 40):
        c.c(start + off, piece)
    c.finish()
    frames += c.frames
    return frames


def main(argv: list[str]) -> int:
    out = Path(argv[1]) if len(argv) > 1 else Path(__file__).with_name("stream-evasions.pcap")
    wrpcap(str(out), build())
    print(f"wrote {out} ({out.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
