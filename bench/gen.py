#!/usr/bin/env python3
"""Deterministic generator of realistic benchmark captures (seeded; same seed, same bytes).

Profiles:
  mixed   HTTP uploads/downloads (chunked, gzip, multipart Office files), SMTP with base64
          attachments (ISO-2022-JP text), FTP control + passive data, TLS sessions with SNI,
          DNS; MSS-sized and small packets; Japanese and English text, binaries, archives.
          A few leaks at known flows (listed in <out>.leaks.json) unless --no-leaks.
  small   >= 50% of packets under 200 bytes (interactive traffic, DNS, ACK-heavy, small posts).
  flows   >= 100,000 concurrent TCP flows (all opened before any closes).

    python3 bench/gen.py mixed --size 1GiB -o bench/data/mixed.pcap
    python3 bench/gen.py small --size 300MiB -o bench/data/small.pcap
    python3 bench/gen.py flows --flows 120000 -o bench/data/flows.pcap

Protected side 10.0.0.0/8 (clients), outside 198.18.0.0/15 (RFC 2544 benchmark range).
Nothing here touches a network: frames are written straight to a pcap file.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import io
import json
import random
import struct
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field

from monitor.config import parse_size

try:
    from textpool import sentence_pool  # run as a script: bench/ is sys.path[0]
except ImportError:  # imported as bench.gen
    from bench.textpool import sentence_pool

MSS = 1448
ETH_SRC = b"\x02\x00\x00\x00\x00\x01"
ETH_DST = b"\x02\x00\x00\x00\x00\x02"

LEAK_TEXT = "この文書は保護すべき情報を含みます。"  # matches the shipped example signature (sid 9100001)


def ip4(a: int) -> bytes:
    return struct.pack("!I", a)


def csum16(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return (~s) & 0xFFFF


class PcapWriter:
    def __init__(self, path: str) -> None:
        self.fh = open(path, "wb", buffering=1 << 22)
        self.fh.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1))
        self.bytes = 24
        self.packets = 0

    def write(self, ts: float, frame: bytes) -> None:
        sec = int(ts)
        usec = int((ts - sec) * 1_000_000)
        n = len(frame)
        self.fh.write(struct.pack("<IIII", sec, usec, n, n))
        self.fh.write(frame)
        self.bytes += 16 + n
        self.packets += 1

    def close(self) -> None:
        self.fh.close()


@dataclass
class TcpConn:
    cli: bytes
    srv: bytes
    cport: int
    sport: int
    cseq: int
    sseq: int
    ipid: int = 1
    frames: list[bytes] = field(default_factory=list)

    def _frame(self, to_server: bool, flags: int, payload: bytes = b"") -> bytes:
        if to_server:
            src, dst, sp, dp, seq, ack = self.cli, self.srv, self.cport, self.sport, self.cseq, self.sseq
        else:
            src, dst, sp, dp, seq, ack = self.srv, self.cli, self.sport, self.cport, self.sseq, self.cseq
        tcp = struct.pack("!HHIIBBHHH", sp, dp, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, 5 << 4, flags, 65535, 0, 0)
        total = 20 + 20 + len(payload)
        self.ipid = (self.ipid + 1) & 0xFFFF
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, self.ipid, 0x4000, 64, 6, 0, src, dst)
        ip = ip[:10] + struct.pack("!H", csum16(ip)) + ip[12:]
        return (ETH_DST if to_server else ETH_SRC) + (ETH_SRC if to_server else ETH_DST) + b"\x08\x00" + ip + tcp + payload

    def handshake(self) -> None:
        self.frames.append(self._frame(True, 0x02))
        self.cseq += 1
        self.frames.append(self._frame(False, 0x12))
        self.sseq += 1
        self.frames.append(self._frame(True, 0x10))

    def send(self, to_server: bool, data: bytes, ack_every: int = 2) -> None:
        n = 0
        for off in range(0, len(data), MSS):
            chunk = data[off : off + MSS]
            self.frames.append(self._frame(to_server, 0x18 if off + MSS >= len(data) else 0x10, chunk))
            if to_server:
                self.cseq += len(chunk)
            else:
                self.sseq += len(chunk)
            n += 1
            if n % ack_every == 0:
                self.frames.append(self._frame(not to_server, 0x10))
        if n % ack_every:
            self.frames.append(self._frame(not to_server, 0x10))

    def close(self) -> None:
        self.frames.append(self._frame(True, 0x11))
        self.cseq += 1
        self.frames.append(self._frame(False, 0x11))
        self.sseq += 1
        self.frames.append(self._frame(True, 0x10))


def udp_frame(src: bytes, dst: bytes, sp: int, dp: int, payload: bytes, ipid: int) -> bytes:
    udp = struct.pack("!HHHH", sp, dp, 8 + len(payload), 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), ipid & 0xFFFF, 0, 64, 17, 0, src, dst)
    ip = ip[:10] + struct.pack("!H", csum16(ip)) + ip[12:]
    return ETH_DST + ETH_SRC + b"\x08\x00" + ip + udp


def _member_info(name: str) -> zipfile.ZipInfo:
    """A deflated archive member with a fixed time stamp (zipfile would stamp "now": not reproducible)."""
    info = zipfile.ZipInfo(name, date_time=(2025, 4, 1, 9, 0, 0))
    info.compress_type = zipfile.ZIP_DEFLATED
    return info


class Content:
    """Pools of realistic payloads, built once per run from the seed.

    Text comes from bench/textpool.py (templates over a few hundred words per language, with
    near misses of the shipped markers), so a gigabyte of traffic carries tens of thousands of
    distinct sentences rather than a few repeated ones. Archives hold text in the encodings
    Japanese offices actually produce (UTF-8, Shift_JIS/CP932 CSV, EUC-JP, UTF-16 with BOM,
    JSON with \\u escapes, HTML with numeric character references); "binaries" are executables'
    shape (code-like random runs, zero padding, integer tables, ASCII and UTF-16LE string
    tables), so every byte form the marker matcher knows also appears in benign data.
    """

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.ja = sentence_pool(rng, 20_000, ja=True)
        self.en = sentence_pool(rng, 20_000, ja=False)
        self.docx = [self._ooxml(rng, i) for i in range(32)]
        self.zips = [self._zip(rng, i) for i in range(32)]
        self.binaries = [self._binary(rng) for _ in range(16)]

    def text(self, n_chars: int, ja: bool | None = None) -> str:
        rng = self.rng
        out: list[str] = []
        size = 0
        while size < n_chars:
            pool = self.ja if (ja if ja is not None else rng.random() < 0.5) else self.en
            s = pool[rng.randrange(len(pool))]
            out.append(s)
            size += len(s)
        return "\n".join(out)

    def _ooxml(self, rng: random.Random, i: int) -> bytes:
        body = "".join(f"<w:p><w:r><w:t>{s}</w:t></w:r></w:p>" for s in self.text(rng.randint(2000, 20000)).split("\n"))
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
            z.writestr(_member_info("[Content_Types].xml"), '<?xml version="1.0"?><Types/>')
            z.writestr(_member_info("word/document.xml"),
                       f'<?xml version="1.0" encoding="UTF-8"?><w:document><w:body>{body}</w:body></w:document>')
            z.writestr(_member_info("docProps/core.xml"), f"<cp:coreProperties><dc:title>doc{i}</dc:title></cp:coreProperties>")
            z.writestr(_member_info("word/media/image1.png"), b"\x89PNG\r\n\x1a\n" + rng.randbytes(30_000))
        return buf.getvalue()

    def _member(self, rng: random.Random, i: int, j: int) -> tuple[str, bytes]:
        """One archive member: Japanese/English text in one of the encodings offices produce."""
        kind = rng.randrange(7)
        text = self.text(rng.randint(1000, 30000), ja=None if kind in (0, 6) else True)
        if kind == 0:
            return f"data/notes{i}_{j}.txt", text.encode("utf-8")
        if kind == 1:  # Windows-made CSV and text: Shift_JIS (CP932), CRLF
            rows = "\r\n".join(f"{n},{s}" for n, s in enumerate(text.split("\n")))
            return f"data/list{i}_{j}.csv", rows.encode("cp932")
        if kind == 2:
            return f"data/old{i}_{j}.txt", text.encode("euc_jp")
        if kind == 3:
            return f"data/unicode{i}_{j}.txt", text.encode("utf-16")
        if kind == 4:  # JSON with ensure_ascii: every kanji a \uXXXX escape
            return f"data/export{i}_{j}.json", json.dumps({"id": i * 100 + j, "lines": text.split("\n")}).encode()
        if kind == 5:  # HTML with numeric character references
            paras = "".join(f"<p>{s}</p>" for s in text.split("\n"))
            return f"data/page{i}_{j}.html", f"<html><body>{paras}</body></html>".encode("ascii", "xmlcharrefreplace")
        return f"data/readme{i}_{j}.md", text.encode("utf-8")

    def _zip(self, rng: random.Random, i: int) -> bytes:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
            for j in range(rng.randint(2, 6)):
                name, data = self._member(rng, i, j)
                z.writestr(_member_info(name), data)
            z.writestr(_member_info("data/blob.bin"), rng.randbytes(50_000))
        return buf.getvalue()

    def _binary(self, rng: random.Random) -> bytes:
        """An executable-shaped blob of 20-400 kB: code-like runs, padding, tables, string tables."""
        parts: list[bytes] = [b"\x7fELF\x02\x01\x01" + bytes(9)]
        size, target = 16, rng.randint(20_000, 400_000)
        while size < target:
            kind = rng.randrange(5)
            if kind == 0:
                part = rng.randbytes(rng.randint(2_000, 40_000))
            elif kind == 1:
                part = bytes(rng.choice((16, 64, 512, 4096)))
            elif kind == 2:
                part = struct.pack(f"<{(n := rng.randint(64, 2048))}I", *(rng.getrandbits(rng.choice((8, 16, 32))) for _ in range(n)))
            elif kind == 3:
                part = b"\0".join(s.encode() for s in rng.sample(self.en, rng.randint(5, 60))) + b"\0"
            else:  # resource strings, as in Windows executables
                pool = self.ja if rng.random() < 0.5 else self.en
                part = b"\0\0".join(s.encode("utf-16-le") for s in rng.sample(pool, rng.randint(5, 60))) + b"\0\0"
            parts.append(part)
            size += len(part)
        return b"".join(parts)[:target]


class Generator:
    def __init__(self, seed: int, leaks: bool, leak_every: int = 400) -> None:
        self.rng = random.Random(seed)
        self.content = Content(self.rng)
        self.leaks_enabled = leaks
        self.leak_every = leak_every
        self.leaks: list[dict[str, object]] = []
        self.n = 0

    def endpoints(self) -> tuple[bytes, bytes, int, int]:
        rng = self.rng
        cli = ip4((10 << 24) | rng.randint(1, 0xFFFFFE))
        srv = ip4((198 << 24) | (18 << 16) | rng.randint(1, 0x1FFFE))
        return cli, srv, rng.randint(20000, 65000), 0

    def conn(self, sport: int) -> TcpConn:
        cli, srv, cport, _ = self.endpoints()
        return TcpConn(cli, srv, cport, sport, self.rng.getrandbits(32), self.rng.getrandbits(32))

    def maybe_leak(self, kind: str, conn: TcpConn) -> str:
        """Every ~leak_every-th flow of a kind carries a leak in some encoding; recorded for checks."""
        if not self.leaks_enabled or self.rng.random() > 1 / self.leak_every:
            return ""
        import ipaddress

        self.leaks.append({"kind": kind, "src_ip": str(ipaddress.ip_address(conn.cli)), "src_port": conn.cport,
                           "dest_ip": str(ipaddress.ip_address(conn.srv)), "dest_port": conn.sport, "sid": 9100001})
        return LEAK_TEXT

    # --- flow kinds -----------------------------------------------------------------
    def http_upload(self) -> list[bytes]:
        rng, c = self.rng, self.conn(rng_port := self.rng.choice([80, 8080]))
        c.handshake()
        leak = self.maybe_leak("http-upload", c)
        doc = rng.choice(self.content.docx)
        if leak:
            buf = io.BytesIO(doc)
            out = io.BytesIO()
            with zipfile.ZipFile(buf) as zin, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zout:
                for item in zin.infolist():
                    data = zin.read(item)
                    if item.filename == "word/document.xml":
                        data = data.replace(b"<w:body>", f"<w:body><w:p><w:r><w:t>{leak}</w:t></w:r></w:p>".encode())
                    zout.writestr(item, data)
            doc = out.getvalue()
        boundary = f"----leakmonbench{rng.getrandbits(48):x}"
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\n{self.content.text(200)}\r\n"
                f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"report{self.n}.docx\"\r\n"
                f"Content-Type: application/vnd.openxmlformats-officedocument.wordprocessingml.document\r\n\r\n").encode() + doc + f"\r\n--{boundary}--\r\n".encode()
        mode = rng.random()
        if mode < 0.3:
            chunks = b"".join(f"{len(body[i:i + 8192]):x}\r\n".encode() + body[i:i + 8192] + b"\r\n" for i in range(0, len(body), 8192)) + b"0\r\n\r\n"
            head = f"POST /upload HTTP/1.1\r\nHost: files{rng.randint(1, 50)}.example.net\r\nUser-Agent: curl/7.88.1\r\nTransfer-Encoding: chunked\r\nContent-Type: multipart/form-data; boundary={boundary}\r\n\r\n"
            c.send(True, head.encode() + chunks)
        else:
            head = f"POST /upload HTTP/1.1\r\nHost: files{rng.randint(1, 50)}.example.net\r\nUser-Agent: curl/7.88.1\r\nContent-Length: {len(body)}\r\nContent-Type: multipart/form-data; boundary={boundary}\r\n\r\n"
            c.send(True, head.encode() + body)
        c.send(False, b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok")
        c.close()
        _ = rng_port
        return c.frames

    def http_download(self) -> list[bytes]:
        rng, c = self.rng, self.conn(80)
        c.handshake()
        for _ in range(rng.randint(1, 3)):  # keep-alive
            kind = rng.random()
            c.send(True, f"GET /files/{rng.getrandbits(32):x} HTTP/1.1\r\nHost: cdn{rng.randint(1, 20)}.example.com\r\nAccept-Encoding: gzip\r\nUser-Agent: Mozilla/5.0\r\n\r\n".encode())
            if kind < 0.4:
                text = self.content.text(rng.randint(5000, 120000)).encode()
                body = gzip.compress(text, 6, mtime=0)
                hdr = f"HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Encoding: gzip\r\nContent-Length: {len(body)}\r\n\r\n"
                c.send(False, hdr.encode() + body)
            elif kind < 0.7:
                body = rng.choice(self.content.binaries)
                hdr = "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
                chunks = b"".join(f"{len(body[i:i + 16384]):x}\r\n".encode() + body[i:i + 16384] + b"\r\n" for i in range(0, len(body), 16384)) + b"0\r\n\r\n"
                c.send(False, hdr.encode() + chunks)
            else:
                body = rng.choice(self.content.zips)
                hdr = f"HTTP/1.1 200 OK\r\nContent-Type: application/zip\r\nContent-Length: {len(body)}\r\n\r\n"
                c.send(False, hdr.encode() + body)
        c.close()
        return c.frames

    def smtp(self) -> list[bytes]:
        rng, c = self.rng, self.conn(25)
        c.handshake()
        leak = self.maybe_leak("smtp", c)

        def dialog(cmd: str, reply: str) -> None:
            c.send(True, cmd.encode())
            c.send(False, reply.encode())

        c.send(False, b"220 mx.example.net ESMTP\r\n")
        dialog("EHLO pc.corp.example\r\n", "250-mx.example.net\r\n250 8BITMIME\r\n")
        dialog("MAIL FROM:<user@corp.example>\r\n", "250 OK\r\n")
        dialog("RCPT TO:<partner@example.net>\r\n", "250 OK\r\n")
        dialog("DATA\r\n", "354 go ahead\r\n")
        text = self.content.text(rng.randint(300, 3000), ja=True) + leak
        body_jis = base64.encodebytes(text.encode("iso-2022-jp", "replace")).decode()
        att = rng.choice(self.content.zips + self.content.docx)
        att_b64 = base64.encodebytes(att).decode()
        msg = ("From: user@corp.example\r\nTo: partner@example.net\r\nSubject: =?ISO-2022-JP?B?GyRCOzFOQRsoQg==?=\r\n"
               "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\n"
               "Content-Type: text/plain; charset=ISO-2022-JP\r\nContent-Transfer-Encoding: base64\r\n\r\n"
               f"{body_jis}\r\n--b1\r\nContent-Type: application/zip; name=\"data.zip\"\r\n"
               "Content-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename=\"data.zip\"\r\n\r\n"
               f"{att_b64}\r\n--b1--\r\n").replace("\n", "\r\n").replace("\r\r\n", "\r\n")
        c.send(True, msg.encode() + b".\r\n")
        c.send(False, b"250 queued\r\n")
        dialog("QUIT\r\n", "221 bye\r\n")
        c.close()
        return c.frames

    def ftp(self) -> list[bytes]:
        rng = self.rng
        ctl = self.conn(21)
        ctl.handshake()
        ctl.send(False, b"220 FTP ready\r\n")
        for cmd, rep in (("USER bench\r\n", "331 pw\r\n"), ("PASS secret\r\n", "230 ok\r\n"), ("TYPE I\r\n", "200 ok\r\n")):
            ctl.send(True, cmd.encode())
            ctl.send(False, rep.encode())
        port = rng.randint(30000, 60000)
        a = ctl.srv
        ctl.send(True, b"PASV\r\n")
        ctl.send(False, f"227 Entering Passive Mode ({a[0]},{a[1]},{a[2]},{a[3]},{port >> 8},{port & 255})\r\n".encode())
        name = f"data{self.n}.bin"
        up = rng.random() < 0.5
        ctl.send(True, f"{'STOR' if up else 'RETR'} {name}\r\n".encode())
        ctl.send(False, b"150 opening\r\n")
        opened = len(ctl.frames)  # the data connection follows the 227 and 150 replies
        data = TcpConn(ctl.cli, ctl.srv, rng.randint(20000, 65000), port, rng.getrandbits(32), rng.getrandbits(32))
        data.handshake()
        payload = rng.choice(self.content.binaries + self.content.zips)
        data.send(up, payload)
        data.close()
        ctl.send(False, b"226 done\r\n")
        ctl.send(True, b"QUIT\r\n")
        ctl.send(False, b"221 bye\r\n")
        ctl.close()
        return ctl.frames[:opened] + data.frames + ctl.frames[opened:]

    def tls(self) -> list[bytes]:
        rng, c = self.rng, self.conn(443)
        c.handshake()
        sni = f"www{rng.randint(1, 99)}.example.org".encode()
        ext_sni = struct.pack("!HHHBH", 0, len(sni) + 5, len(sni) + 3, 0, len(sni)) + sni
        suites = struct.pack("!H", 6) + b"\x13\x01\xc0\x2f\xc0\x30"
        hello = b"\x03\x03" + rng.randbytes(32) + b"\x00" + suites + b"\x01\x00" + struct.pack("!H", len(ext_sni)) + ext_sni
        hs = b"\x01" + struct.pack("!I", len(hello))[1:] + hello
        c.send(True, b"\x16\x03\x01" + struct.pack("!H", len(hs)) + hs)
        sh = b"\x03\x03" + rng.randbytes(32) + b"\x00\xc0\x2f\x00\x00\x00"
        shs = b"\x02" + struct.pack("!I", len(sh))[1:] + sh
        c.send(False, b"\x16\x03\x03" + struct.pack("!H", len(shs)) + shs)
        for _ in range(rng.randint(1, 4)):
            up = rng.random() < 0.3
            blob = rng.randbytes(rng.randint(200, 200_000))
            recs = b"".join(b"\x17\x03\x03" + struct.pack("!H", len(blob[i:i + 16384])) + blob[i:i + 16384] for i in range(0, len(blob), 16384))
            c.send(up, recs)
        c.close()
        return c.frames

    def dns(self) -> list[bytes]:
        rng = self.rng
        cli, srv, cport, _ = self.endpoints()
        name = f"host{rng.randint(1, 9999)}.example.com"
        qname = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
        tid = rng.getrandbits(16)
        q = struct.pack("!HHHHHH", tid, 0x0100, 1, 0, 0, 0) + qname + b"\x00\x01\x00\x01"
        a = struct.pack("!HHHHHH", tid, 0x8180, 1, 1, 0, 0) + qname + b"\x00\x01\x00\x01" + b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x0e\x10\x00\x04" + rng.randbytes(4)
        return [udp_frame(cli, srv, cport, 53, q, tid), udp_frame(srv, cli, 53, cport, a, tid)]

    def small_interactive(self) -> list[bytes]:
        rng, c = self.rng, self.conn(rng_p := self.rng.choice([22, 23, 6667, 5222]))
        _ = rng_p
        c.handshake()
        for _ in range(rng.randint(20, 120)):
            c.send(True, rng.randbytes(rng.randint(1, 80)), ack_every=1)
            c.send(False, rng.randbytes(rng.randint(1, 120)), ack_every=1)
        c.close()
        return c.frames


MIXED = [("http_upload", 18), ("http_download", 30), ("smtp", 10), ("ftp", 6), ("tls", 30), ("dns", 40)]
SMALL = [("small_interactive", 60), ("dns", 60), ("http_upload", 1), ("tls", 2)]


def interleave(gen: Generator, weights: list[tuple[str, int]], target_bytes: int, out: PcapWriter,
               concurrency: int = 32) -> None:
    """Run up to `concurrency` flows at once, taking one frame from a random active flow at a time."""
    rng = gen.rng
    kinds = [k for k, w in weights for _ in range(w)]
    active: list[Iterator[bytes]] = []
    ts = 1_700_000_000.0
    while out.bytes < target_bytes or active:
        while len(active) < concurrency and out.bytes < target_bytes:
            gen.n += 1
            active.append(iter(getattr(gen, rng.choice(kinds))()))
        i = rng.randrange(len(active))
        frame = next(active[i], None)
        if frame is None:
            active[i] = active[-1]
            active.pop()
            continue
        ts += rng.random() * 0.0002
        out.write(ts, frame)


def many_flows(gen: Generator, n_flows: int, out: PcapWriter) -> None:
    """Open n_flows connections (handshake + small request), then answer and close them all."""
    rng = gen.rng
    ts = 1_700_000_000.0
    conns = []
    for i in range(n_flows):
        c = TcpConn(ip4((10 << 24) | (i + 1)), ip4((198 << 24) | (18 << 16) | rng.randint(1, 0x1FFFE)),
                    rng.randint(1024, 65000), 80, rng.getrandbits(32), rng.getrandbits(32))
        c.handshake()
        c.send(True, f"GET /{i} HTTP/1.1\r\nHost: h{i % 997}.example.com\r\n\r\n".encode())
        for f in c.frames:
            ts += 0.00001
            out.write(ts, f)
        c.frames.clear()
        conns.append(c)
    for c in conns:
        c.send(False, b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
        c.close()
        for f in c.frames:
            ts += 0.00001
            out.write(ts, f)
        c.frames.clear()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("profile", choices=["mixed", "small", "flows"])
    ap.add_argument("-o", "--out", required=True)
    ap.add_argument("--size", default="1GiB", help="Target capture size (mixed, small)")
    ap.add_argument("--flows", type=int, default=120_000, help="Concurrent flows (flows profile)")
    ap.add_argument("--seed", type=int, default=20261125)
    ap.add_argument("--no-leaks", action="store_true", help="Benign traffic only (precision check)")
    ap.add_argument("--leak-every", type=int, default=400,
                    help="About one upload/mail flow in N carries a leak (small captures: lower it)")
    args = ap.parse_args(argv)
    gen = Generator(args.seed, leaks=not args.no_leaks and args.profile == "mixed", leak_every=max(1, args.leak_every))
    out = PcapWriter(args.out)
    if args.profile == "flows":
        many_flows(gen, args.flows, out)
    else:
        interleave(gen, MIXED if args.profile == "mixed" else SMALL, parse_size(args.size), out)
    out.close()
    with open(args.out + ".leaks.json", "w") as fh:
        json.dump({"seed": args.seed, "profile": args.profile, "packets": out.packets, "bytes": out.bytes,
                   "leaks": gen.leaks}, fh, indent=1)
    print(f"{args.out}: {out.packets} packets, {out.bytes / 1e6:.1f} MB, {len(gen.leaks)} leak flows", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
