"""DNS over UDP (one datagram per ``feed``) and TCP (2-byte length framing).

Queries and answers become EVE ``dns`` events in Suricata's version-2 style: one ``query``
record per question, one ``answer`` record per response (``rcode``, ``answers`` list with
``rrname``/``rrtype``/``ttl``/``rdata``). A/AAAA answers teach the pipeline the names of
addresses (``ctx.learn_name(ip, name, "dns")``). Names are decoded with compression
pointers that must point backwards and at most ``MAX_POINTERS`` jumps (loop protection);
malformed messages are ``dns.*`` anomalies.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from typing import Any

from monitor.applayer.base import AppContext
from monitor.model import TO_CLIENT, TO_SERVER

MAX_POINTERS = 32
MAX_NAME = 255
MAX_RECORDS = 256  # answers/authorities kept per message
MAX_TCP_MESSAGE = 65535
MAX_PENDING_IDS = 4096

RRTYPES = {1: "A", 2: "NS", 5: "CNAME", 6: "SOA", 12: "PTR", 13: "HINFO", 15: "MX", 16: "TXT",
           28: "AAAA", 33: "SRV", 35: "NAPTR", 39: "DNAME", 41: "OPT", 43: "DS", 46: "RRSIG",
           47: "NSEC", 48: "DNSKEY", 52: "TLSA", 64: "SVCB", 65: "HTTPS", 99: "SPF", 255: "ANY",
           257: "CAA"}
RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED",
          6: "YXDOMAIN", 7: "YXRRSET", 8: "NXRRSET", 9: "NOTAUTH", 10: "NOTZONE"}


class DnsMalformed(Exception):
    pass


def rrtype_name(t: int) -> str:
    return RRTYPES.get(t, f"TYPE{t}")


def read_name(msg: bytes, pos: int) -> tuple[str, int]:
    """(name, position after the name in the original place). Raises DnsMalformed."""
    labels: list[str] = []
    jumps = 0
    end: int | None = None
    total = 0
    while True:
        if pos >= len(msg):
            raise DnsMalformed("name past end")
        n = msg[pos]
        if n == 0:
            pos += 1
            break
        if n & 0xC0 == 0xC0:
            if pos + 1 >= len(msg):
                raise DnsMalformed("pointer past end")
            target = ((n & 0x3F) << 8) | msg[pos + 1]
            if end is None:
                end = pos + 2
            jumps += 1
            if jumps > MAX_POINTERS or target >= pos:
                raise DnsMalformed("compression loop")
            pos = target
            continue
        if n & 0xC0:
            raise DnsMalformed("bad label type")
        label = msg[pos + 1:pos + 1 + n]
        if len(label) < n:
            raise DnsMalformed("label past end")
        total += n + 1
        if total > MAX_NAME:
            raise DnsMalformed("name too long")
        labels.append(label.decode("ascii", "backslashreplace").replace(".", "\\."))
        pos += 1 + n
    return ".".join(labels), (end if end is not None else pos)


def _rdata(msg: bytes, rtype: int, start: int, length: int) -> str | None:
    raw = msg[start:start + length]
    if rtype == 1 and length == 4:
        return f"{raw[0]}.{raw[1]}.{raw[2]}.{raw[3]}"  # str(ipaddress.IPv4Address(raw)), without the object
    if rtype == 28 and length == 16:
        return str(ipaddress.IPv6Address(raw))
    if rtype in (2, 5, 12, 39):
        return read_name(msg, start)[0]
    if rtype == 15 and length >= 3:
        return read_name(msg, start + 2)[0]
    if rtype == 16:
        out, i = [], 0
        while i < len(raw):
            n = raw[i]
            out.append(raw[i + 1:i + 1 + n].decode("utf-8", "replace"))
            i += 1 + n
        return "".join(out)
    if rtype == 33 and length >= 7:
        return read_name(msg, start + 6)[0]
    if rtype == 6:
        return read_name(msg, start)[0]
    return None


# Fixed-size fields read in one C call each (the bounds are checked before every read).
_HEADER = struct.Struct(">6H")  # id, flags, question/answer/authority/additional counts
_RECORD = struct.Struct(">HHIH")  # type, class, TTL, rdata length
_U16 = struct.Struct(">H")


def _packed(rtype: int, address: str) -> bytes:
    """The packed form of an A/AAAA record's address text as :func:`_rdata` wrote it (what
    ``ipaddress.ip_address(address).packed`` gives, without building the object)."""
    return socket.inet_aton(address) if rtype == 1 else socket.inet_pton(socket.AF_INET6, address)


def parse_message(msg: bytes) -> dict[str, Any]:
    """Header, questions and answer records of one DNS message. Raises DnsMalformed."""
    if len(msg) < 12:
        raise DnsMalformed("short header")
    ident, flags, qd, an, ns, _ar = _HEADER.unpack_from(msg)
    pos = 12
    questions = []
    for _ in range(min(qd, MAX_RECORDS)):
        name, pos = read_name(msg, pos)
        if pos + 4 > len(msg):
            raise DnsMalformed("question past end")
        qtype = _U16.unpack_from(msg, pos)[0]
        pos += 4
        questions.append((name, qtype))
    answers = []
    truncated = False
    for i in range(an + ns):
        if i >= MAX_RECORDS:
            truncated = True
            break
        name, pos = read_name(msg, pos)
        if pos + 10 > len(msg):
            raise DnsMalformed("record past end")
        rtype, _class, ttl, rdlen = _RECORD.unpack_from(msg, pos)
        pos += 10
        if pos + rdlen > len(msg):
            raise DnsMalformed("rdata past end")
        if i < an:
            answers.append({"rrname": name, "rrtype": rrtype_name(rtype), "ttl": ttl,
                            "rdata": _rdata(msg, rtype, pos, rdlen), "_type": rtype})
        pos += rdlen
    return {"id": ident, "flags": flags, "qr": bool(flags & 0x8000), "opcode": (flags >> 11) & 0xF,
            "aa": bool(flags & 0x0400), "tc": bool(flags & 0x0200), "rd": bool(flags & 0x0100),
            "ra": bool(flags & 0x0080), "rcode": flags & 0xF, "questions": questions,
            "answers": answers, "records_capped": truncated}


class DnsParser:
    """DNS messages of one flow (UDP datagrams or a TCP stream)."""

    name = "dns"

    def __init__(self, ctx: AppContext, tcp: bool = False) -> None:
        self.ctx = ctx
        self.tcp = tcp
        self.bufs = [bytearray(), bytearray()]
        self.dead = [False, False]
        self.tx_ids: dict[int, int] = {}
        self.next_tx = 0
        self.ts = 0.0

    def feed(self, direction: int, data: bytes, ts: float) -> None:
        self.ts = ts
        if self.dead[direction] or not data:
            return
        if not self.tcp:
            self._message(direction, bytes(data))
            return
        buf = self.bufs[direction]
        buf += data
        while len(buf) >= 2:
            n = int.from_bytes(buf[:2], "big")
            if n < 12:
                self.ctx.anomaly("dns.tcp_length_invalid", direction=direction)
                self.dead[direction] = True
                buf.clear()
                return
            if len(buf) < 2 + n:
                return
            msg = bytes(buf[2:2 + n])
            del buf[:2 + n]
            self._message(direction, msg)

    def gap(self, direction: int, length: int, ts: float) -> None:
        if self.tcp and length > 0 and not self.dead[direction]:
            # Message boundaries are lost with the bytes.
            self.ctx.anomaly("dns.gap", direction=direction)
            self.dead[direction] = True
            self.bufs[direction].clear()

    def close(self, ts: float) -> None:
        for d in (TO_SERVER, TO_CLIENT):
            if self.bufs[d]:
                self.ctx.anomaly("dns.truncated_message", direction=d)
                self.bufs[d].clear()

    def _tx(self, ident: int, response: bool) -> int:
        if response and ident in self.tx_ids:
            return self.tx_ids.pop(ident)
        tx = self.next_tx
        self.next_tx += 1
        if not response:
            if len(self.tx_ids) >= MAX_PENDING_IDS:
                self.ctx.stats.incr("dns.pending_cap")
                self.tx_ids.clear()
            self.tx_ids[ident] = tx
        return tx

    def _message(self, direction: int, msg: bytes) -> None:
        try:
            m = parse_message(msg)
        except (DnsMalformed, ValueError, IndexError):
            self.ctx.anomaly("dns.malformed", direction=direction)
            self.ctx.stats.incr("dns.malformed")
            return
        if m["records_capped"]:
            self.ctx.stats.incr("dns.records_cap")
        if not m["qr"]:
            tx_id = self._tx(m["id"], response=False)
            for name, qtype in m["questions"]:
                self.ctx.event("dns", {"dns": {"version": 2, "type": "query", "id": m["id"],
                                               "rrname": name, "rrtype": rrtype_name(qtype),
                                               "tx_id": tx_id}},
                               direction=direction, tx_id=tx_id, ts=self.ts)
            return
        tx_id = self._tx(m["id"], response=True)
        body: dict[str, Any] = {
            "version": 2, "type": "answer", "id": m["id"], "flags": f"{m['flags']:x}",
            "qr": True, "aa": m["aa"], "tc": m["tc"], "rd": m["rd"], "ra": m["ra"],
            "rcode": RCODES.get(m["rcode"], str(m["rcode"])),
        }
        if m["questions"]:
            body["rrname"], qtype = m["questions"][0]
            body["rrtype"] = rrtype_name(qtype)
        answers = []
        for a in m["answers"]:
            rtype = a.pop("_type")
            if a["rdata"] is None:
                del a["rdata"]
            answers.append(a)
            if rtype in (1, 28) and a.get("rdata"):
                self.ctx.learn_name(_packed(rtype, a["rdata"]), body.get("rrname") or a["rrname"], "dns")
        if answers:
            body["answers"] = answers
        self.ctx.event("dns", {"dns": body}, direction=direction, tx_id=tx_id, ts=self.ts)
