"""TLS handshake parser (no decryption): ClientHello, ServerHello, Certificate.

Records are parsed per direction; handshake messages are reassembled across records and
TCP segments. From the ClientHello: SNI, ALPN, offered versions (``supported_versions``),
cipher suites, JA3 (Salesforce: ``version,ciphers,extensions,groups,point_formats``, GREASE
removed, MD5) and JA4 (FoxIO: ``t13d1516h2_<ciphers sha256/12>_<extensions+sigalgs sha256/12>``).
From the ServerHello: chosen version and cipher suite, JA3S. From a TLS <= 1.2 Certificate
message: the leaf's subject, issuer, serial, validity and SHA-1 fingerprint (``cryptography``).

Once the server's side is known (TLS 1.3 ServerHello, certificate, ServerHelloDone, or
encrypted records) one EVE ``tls`` event is written, ``ctx.tls(info)`` is called for the
weak-crypto policy (``version`` as ``TLSv1``..``TLSv1.3``, ``version_id`` the wire value,
``cipher_suite`` the IANA number) and the SNI is learnt as the server's name. Parsing a direction stops at
its first encrypted record (ChangeCipherSpec, application data) or on malformed input
(anomaly ``tls.*``).
"""

from __future__ import annotations

import hashlib
from struct import unpack_from as _unpack_from
from typing import Any

from monitor.applayer.base import AppContext
from monitor.applayer.tls_suites import CIPHER_SUITES
from monitor.model import TO_CLIENT, TO_SERVER

MAX_RECORD = (1 << 14) + 2048  # TLSCiphertext limit
MAX_HANDSHAKE = 256 << 10  # one handshake message (certificate chains)

VERSION_NAMES = {0x0002: "SSLv2", 0x0300: "SSLv3", 0x0301: "TLSv1", 0x0302: "TLS 1.1",
                 0x0303: "TLS 1.2", 0x0304: "TLS 1.3"}
# Names the weak-crypto policy ranks (detectors.signatures.tls_version_rank).
POLICY_VERSION_NAMES = {0x0002: "SSLv2", 0x0300: "SSLv3", 0x0301: "TLSv1", 0x0302: "TLSv1.1",
                        0x0303: "TLSv1.2", 0x0304: "TLSv1.3"}
_JA4_VERSIONS = {0x0304: "13", 0x0303: "12", 0x0302: "11", 0x0301: "10", 0x0300: "s3", 0x0002: "s2",
                 0xFEFF: "d1", 0xFEFD: "d2", 0xFEFC: "d3"}

EXT_SNI, EXT_GROUPS, EXT_POINT_FORMATS, EXT_SIG_ALGS, EXT_ALPN, EXT_VERSIONS = 0, 10, 11, 13, 16, 43
HS_CLIENT_HELLO, HS_SERVER_HELLO, HS_CERTIFICATE, HS_SERVER_HELLO_DONE = 1, 2, 11, 14
_HRR_RANDOM = bytes.fromhex("cf21ad74e59a6111be1d8c021e65b891c2a211167abb8c5e079e09e2c8a8339c")


def is_grease(v: int) -> bool:
    """RFC 8701 GREASE values (0x0a0a, 0x1a1a, ... 0xfafa)."""
    return (v & 0x0F0F) == 0x0A0A and (v >> 8) == (v & 0xFF)


# The same 16 values as a set: lists are filtered by one membership test per value, not a call.
_GREASE = frozenset(v for v in range(0x0A0A, 0x10000, 0x1010) if is_grease(v))


class _Malformed(Exception):
    pass


class _Reader:
    """Bounds-checked big-endian reader over one message."""

    __slots__ = ("b", "i", "end")

    def __init__(self, b: bytes, i: int = 0, end: int | None = None) -> None:
        self.b = b
        self.i = i
        self.end = len(b) if end is None else end

    def left(self) -> int:
        return self.end - self.i

    def take(self, n: int) -> bytes:
        if n < 0 or self.i + n > self.end:
            raise _Malformed
        out = self.b[self.i:self.i + n]
        self.i += n
        return out

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return int.from_bytes(self.take(2), "big")

    def u24(self) -> int:
        return int.from_bytes(self.take(3), "big")

    def vec(self, size_len: int) -> _Reader:
        n = int.from_bytes(self.take(size_len), "big")
        sub = _Reader(self.b, self.i, self.i + n)
        if sub.end > self.end:
            raise _Malformed
        self.i += n
        return sub

    def take_all(self) -> bytes:
        return self.take(self.left())

    def u16_list(self) -> list[int]:
        """The rest as big-endian 16-bit values (an odd last byte is dropped), unpacked in C."""
        raw = self.take(self.left())
        return list(_unpack_from(f">{len(raw) >> 1}H", raw))


def _extensions(r: _Reader) -> list[tuple[int, bytes]]:
    if r.left() < 2:
        return []
    exts = r.vec(2)
    out = []
    while exts.left() > 0:
        etype = exts.u16()
        out.append((etype, _take_vec(exts)))
    return out


def _take_vec(r: _Reader) -> bytes:
    n = r.u16()
    return r.take(n)


def _alpn_list(data: bytes) -> list[str]:
    r = _Reader(data)
    out = []
    lst = r.vec(2)
    while lst.left() > 0:
        n = lst.u8()
        out.append(lst.take(n).decode("latin-1"))
    return out


def _hex4(values: list[int]) -> str:
    return ",".join(map(_HEX4, values))


_HEX4 = "{:04x}".format


def _sha12(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def ja4_alpn(alpn: str) -> str:
    if not alpn:
        return "00"
    first, last = alpn[0], alpn[-1]
    if first.isascii() and first.isalnum() and last.isascii() and last.isalnum():
        return first + last
    b = alpn.encode("latin-1", "replace")
    return f"{b[0]:02x}"[0] + f"{b[-1]:02x}"[1]


def ja4(ciphers: list[int], extensions: list[int], sig_algs: list[int], versions: list[int],
        legacy_version: int, alpn: str, has_sni: bool, transport: str = "t") -> tuple[str, str]:
    """(JA4, JA4_r) from ClientHello fields (GREASE must already be removed)."""
    version = max(versions) if versions else legacy_version
    head = (f"{transport}{_JA4_VERSIONS.get(version, '00')}{'d' if has_sni else 'i'}"
            f"{min(len(ciphers), 99):02d}{min(len(extensions), 99):02d}{ja4_alpn(alpn)}")
    c_raw = _hex4(sorted(ciphers))
    ext_sorted = sorted(e for e in extensions if e not in (EXT_SNI, EXT_ALPN))
    e_raw = _hex4(ext_sorted)
    if sig_algs:
        e_raw += "_" + _hex4(sig_algs)
    part_b = _sha12(c_raw) if ciphers else "000000000000"
    part_c = _sha12(e_raw) if extensions else "000000000000"
    return f"{head}_{part_b}_{part_c}", f"{head}_{c_raw}_{e_raw}"


def ja3_string(version: int, ciphers: list[int], extensions: list[int], groups: list[int],
               point_formats: list[int]) -> str:
    def j(vals: list[int]) -> str:
        return "-".join(map(str, vals))

    return f"{version},{j(ciphers)},{j(extensions)},{j(groups)},{j(point_formats)}"


def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()  # noqa: S324 - JA3 is defined over MD5


def parse_client_hello(body: bytes) -> dict[str, Any]:
    """ClientHello facts. Raises _Malformed."""
    r = _Reader(body)
    legacy = r.u16()
    r.take(32)
    r.take(r.u8())  # session id
    suites = r.vec(2).u16_list()
    r.take(r.u8())  # compression methods
    exts = _extensions(r)
    ciphers = [c for c in suites if c not in _GREASE]
    ext_ids = [e for e, _ in exts if e not in _GREASE]
    info: dict[str, Any] = {"legacy_version": legacy, "ciphers": ciphers, "extensions": ext_ids}
    groups: list[int] = []
    points: list[int] = []
    sig_algs: list[int] = []
    versions: list[int] = []
    alpns: list[str] = []
    sni = ""
    for etype, data in exts:
        er = _Reader(data)
        if etype == EXT_SNI and data:
            names = er.vec(2)
            while names.left() > 0:
                kind = names.u8()
                name = _take_vec(names)
                if kind == 0 and not sni:
                    sni = name.decode("latin-1")
        elif etype == EXT_GROUPS and data:
            groups = [g for g in er.vec(2).u16_list() if g not in _GREASE]
        elif etype == EXT_POINT_FORMATS and data:
            points = list(er.vec(1).take_all())
        elif etype == EXT_SIG_ALGS and data:
            sig_algs = [s for s in er.vec(2).u16_list() if s not in _GREASE]
        elif etype == EXT_ALPN and data:
            alpns = _alpn_list(data)
        elif etype == EXT_VERSIONS and data:
            versions = [v for v in er.vec(1).u16_list() if v not in _GREASE]
    info.update(sni=sni, groups=groups, point_formats=points, sig_algs=sig_algs,
                versions=versions, alpns=alpns, has_sni=any(e == EXT_SNI for e, _ in exts))
    ja3s = ja3_string(legacy, ciphers, ext_ids, groups, points)
    info["ja3"] = {"hash": _md5(ja3s), "string": ja3s}
    info["ja4"], info["ja4_r"] = ja4(ciphers, ext_ids, sig_algs, versions, legacy,
                                     alpns[0] if alpns else "", info["has_sni"])
    return info


def parse_server_hello(body: bytes) -> dict[str, Any]:
    r = _Reader(body)
    legacy = r.u16()
    random = r.take(32)
    r.take(r.u8())
    cipher = r.u16()
    r.u8()  # compression
    exts = _extensions(r)
    version = legacy
    alpn = ""
    for etype, data in exts:
        if etype == EXT_VERSIONS and len(data) >= 2:
            version = int.from_bytes(data[:2], "big")
        elif etype == EXT_ALPN and data:
            names = _alpn_list(data)
            alpn = names[0] if names else ""
    ext_ids = [e for e, _ in exts if e not in _GREASE]
    s = f"{legacy},{cipher},{'-'.join(str(e) for e in ext_ids)}"
    return {"legacy_version": legacy, "version": version, "cipher": cipher, "alpn": alpn,
            "hello_retry": random == _HRR_RANDOM, "ja3s": {"hash": _md5(s), "string": s}}


def _dn(name: Any) -> str:
    parts = []
    for attr in name:
        key = attr.rfc4514_attribute_name
        if key.startswith("1.2.840.113549.1.9.1"):
            key = "emailAddress"
        parts.append(f"{key}={attr.value}")
    return ", ".join(parts)


def parse_certificate(der: bytes) -> dict[str, Any]:
    """Leaf certificate facts (subject, issuerdn, serial, validity, fingerprint)."""
    from cryptography import x509

    cert = x509.load_der_x509_certificate(der)
    before = getattr(cert, "not_valid_before_utc", None) or cert.not_valid_before
    after = getattr(cert, "not_valid_after_utc", None) or cert.not_valid_after
    serial = cert.serial_number.to_bytes((cert.serial_number.bit_length() + 7) // 8 or 1, "big")
    return {
        "subject": _dn(cert.subject),
        "issuerdn": _dn(cert.issuer),
        "serial": ":".join(f"{b:02X}" for b in serial),
        "fingerprint": ":".join(f"{b:02x}" for b in hashlib.sha1(der).digest()),  # noqa: S324
        "notbefore": before.strftime("%Y-%m-%dT%H:%M:%S"),
        "notafter": after.strftime("%Y-%m-%dT%H:%M:%S"),
    }


class _Side:
    __slots__ = ("records", "handshake", "stopped", "messages")

    def __init__(self) -> None:
        self.records = bytearray()
        self.handshake = bytearray()
        self.stopped = False
        self.messages = 0


class TlsParser:
    """TLS handshake observer for one TCP connection."""

    name = "tls"

    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx
        self.sides = (_Side(), _Side())
        self.client: dict[str, Any] | None = None
        self.server: dict[str, Any] | None = None
        self.cert: dict[str, Any] | None = None
        self.chain_len = 0
        self.server_done = False
        self.logged = False
        self.ts = 0.0

    # -- AppParser

    def feed(self, direction: int, data: bytes, ts: float) -> None:
        self.ts = ts
        side = self.sides[direction]
        if side.stopped or not data:
            return
        side.records += data
        self._records(direction, side)
        if len(side.records) > MAX_RECORD + 5:  # pragma: no cover - bounded by _records
            side.records.clear()

    def gap(self, direction: int, length: int, ts: float) -> None:
        side = self.sides[direction]
        if side.stopped or length <= 0:
            return
        # Record boundaries are lost: stop reading this direction.
        self._stop(direction, "tls.gap")

    def close(self, ts: float) -> None:
        self.ts = ts
        self._emit()

    # -- records

    def _stop(self, direction: int, kind: str | None = None) -> None:
        side = self.sides[direction]
        side.stopped = True
        side.records.clear()
        side.handshake.clear()
        if kind:
            self.ctx.anomaly(kind, direction=direction)
        if direction == TO_CLIENT and self.server is not None:
            self.server_done = True
            self._emit()

    def _records(self, direction: int, side: _Side) -> None:
        buf = side.records
        while len(buf) >= 5 and not side.stopped:
            ctype, major, length = buf[0], buf[1], int.from_bytes(buf[3:5], "big")
            if ctype not in (20, 21, 22, 23, 24) or major != 3:
                self._stop(direction, "tls.record_invalid")
                return
            if length > MAX_RECORD:
                self._stop(direction, "tls.record_too_long")
                return
            if len(buf) < 5 + length:
                return
            payload = bytes(buf[5:5 + length])
            del buf[:5 + length]
            if ctype == 22:
                side.handshake += payload
                self._handshakes(direction, side)
            elif ctype in (20, 23):
                # ChangeCipherSpec / application data: the rest of this direction is encrypted.
                self._stop(direction)
                return
            elif ctype == 21 and len(payload) == 2 and payload[0] == 2:
                self.ctx.anomaly("tls.fatal_alert", f"description {payload[1]}", direction=direction)

    def _handshakes(self, direction: int, side: _Side) -> None:
        hs = side.handshake
        while len(hs) >= 4 and not side.stopped:
            mtype = hs[0]
            length = int.from_bytes(hs[1:4], "big")
            if length > MAX_HANDSHAKE:
                self.ctx.stats.incr("tls.handshake_cap")
                self._stop(direction, "tls.handshake_too_long")
                return
            if len(hs) < 4 + length:
                return
            body = bytes(hs[4:4 + length])
            del hs[:4 + length]
            side.messages += 1
            try:
                self._message(direction, mtype, body)
            except (_Malformed, IndexError, ValueError, UnicodeError):
                self._stop(direction, "tls.handshake_malformed")
                return

    def _message(self, direction: int, mtype: int, body: bytes) -> None:
        if direction == TO_SERVER and mtype == HS_CLIENT_HELLO and self.client is None:
            self.client = parse_client_hello(body)
            if self.client["sni"]:
                self.ctx.learn_name(self.ctx.flow.server, self.client["sni"], "tls")
        elif direction == TO_CLIENT and mtype == HS_SERVER_HELLO:
            hello = parse_server_hello(body)
            if self.server is None or self.server.get("hello_retry"):
                self.server = hello
            if hello["version"] == 0x0304 and not hello["hello_retry"]:
                # TLS 1.3: everything after the ServerHello is encrypted.
                self.server_done = True
                self.sides[TO_CLIENT].stopped = True
                self._emit()
        elif direction == TO_CLIENT and mtype == HS_CERTIFICATE and self.cert is None:
            r = _Reader(body)
            chain = r.vec(3)
            first = True
            while chain.left() > 0:
                der = chain.take(chain.u24())
                self.chain_len += 1
                if first:
                    first = False
                    try:
                        self.cert = parse_certificate(der)
                    except Exception:  # noqa: BLE001 - cryptography raises several types
                        self.ctx.anomaly("tls.certificate_invalid", direction=direction)
                        self.cert = {}
            self.server_done = True
            self._emit()
        elif direction == TO_CLIENT and mtype == HS_SERVER_HELLO_DONE:
            self.server_done = True
            self._emit()

    # -- output

    def _emit(self) -> None:
        if self.logged or (self.client is None and self.server is None):
            return
        self.logged = True
        tls: dict[str, Any] = {}
        info: dict[str, Any] = {}
        c = self.client or {}
        s = self.server
        if c.get("sni"):
            tls["sni"] = c["sni"]
            info["sni"] = c["sni"]
        if s is not None:
            version = s["version"]
            tls["version"] = VERSION_NAMES.get(version, f"0x{version:04x}")
            name = CIPHER_SUITES.get(s["cipher"], f"0x{s['cipher']:04X}")
            tls["cipher_suite"] = name
            tls["cipher_id"] = s["cipher"]
            tls["ja3s"] = s["ja3s"]
            if s["alpn"]:
                tls["server_alpn"] = s["alpn"]
            info.update(version=POLICY_VERSION_NAMES.get(version, f"0x{version:04x}"), version_id=version,
                        cipher_suite=s["cipher"], cipher_name=name, alpn=s["alpn"] or None)
        elif self.client is not None:
            tls["version"] = "UNDETERMINED"
        if self.client is not None:
            tls["ja3"] = c["ja3"]
            tls["ja4"] = c["ja4"]
            if c["alpns"]:
                tls["client_alpns"] = c["alpns"]
            offered = c["versions"] or [c["legacy_version"]]
            tls["client_versions"] = [VERSION_NAMES.get(v, f"0x{v:04x}") for v in offered]
            info.update(offered_versions=offered, ja3=c["ja3"]["hash"], ja4=c["ja4"],
                        client_ciphers=c["ciphers"])
        if self.cert:
            tls.update(self.cert)
            info.update(subject=self.cert.get("subject"), issuer=self.cert.get("issuerdn"),
                        not_after=self.cert.get("notafter"))
            tls["chain_length"] = self.chain_len
        self.ctx.event("tls", {"tls": tls}, direction=TO_SERVER, ts=self.ts)
        if s is not None:
            self.ctx.tls(info)
