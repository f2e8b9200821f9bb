"""TLS handshake parsing: records/segments reassembly, SNI/ALPN/versions, JA3/JA4, certificates."""

from __future__ import annotations

import datetime
import shutil
import struct
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alerts.schema import validate_lines
from monitor.applayer.tls import TlsParser, ja4
from monitor.model import TO_CLIENT, TO_SERVER
from tests.conftest import PCAPS
from tests.factories import RecordingContext, tflow
from tests.monitor.applayer.replay import eve_lines, replay

# A Chrome ClientHello in original order (JA4_ro of a published sample) with its known hashes.
CHROME_CIPHERS = [0x1301, 0x1302, 0x1303, 0xC02B, 0xC02F, 0xC02C, 0xC030, 0xCCA9, 0xCCA8, 0xC013, 0xC014,
                  0x009C, 0x009D, 0x002F, 0x0035]
CHROME_EXTS = [0x002D, 0x0033, 0x0010, 0xFE0D, 0x0017, 0x44CD, 0x0000, 0x000B, 0x000A, 0x002B, 0xFF01,
               0x0023, 0x0012, 0x0005, 0x000D, 0x001B]
CHROME_SIGALGS = [0x0403, 0x0804, 0x0401, 0x0503, 0x0805, 0x0501, 0x0806, 0x0601]


def u16(v: int) -> bytes:
    return struct.pack("!H", v)


def vec(data: bytes, n: int = 2) -> bytes:
    return len(data).to_bytes(n, "big") + data


def ext(etype: int, data: bytes) -> bytes:
    return u16(etype) + vec(data)


def record(ctype: int, payload: bytes) -> bytes:
    return bytes([ctype, 3, 1]) + vec(payload)


def handshake(mtype: int, body: bytes) -> bytes:
    return bytes([mtype]) + vec(body, 3)


def client_hello(sni: str = "secret.example.jp", ciphers: list[int] | None = None,
                 exts: list[int] | None = None, grease: bool = True, alpn: list[bytes] | None = None,
                 versions: list[int] | None = None, sigalgs: list[int] | None = None,
                 split: int = 0) -> bytes:
    """A ClientHello record; ``split`` > 0 spreads the handshake over several records."""
    ciphers = list(CHROME_CIPHERS if ciphers is None else ciphers)
    exts = list(CHROME_EXTS if exts is None else exts)
    if grease:
        ciphers.insert(0, 0x0A0A)
        exts.insert(0, 0x1A1A)
    body = b""
    for e in exts:
        if e == 0x0000:
            body += ext(0, vec(b"\x00" + vec(sni.encode())))
        elif e == 0x0010:
            body += ext(0x10, vec(b"".join(vec(a, 1) for a in (alpn or [b"h2", b"http/1.1"]))))
        elif e == 0x000A:
            body += ext(0x0A, vec(b"".join(u16(g) for g in ([0x2A2A] if grease else []) + [0x001D, 0x0017, 0x0018])))
        elif e == 0x000B:
            body += ext(0x0B, vec(b"\x00", 1))
        elif e == 0x000D:
            body += ext(0x0D, vec(b"".join(u16(s) for s in (sigalgs or CHROME_SIGALGS))))
        elif e == 0x002B:
            body += ext(0x2B, vec(b"".join(u16(v) for v in ([0x3A3A] if grease else []) + (versions or [0x0304, 0x0303])), 1))
        else:
            body += ext(e, b"")
    hello = u16(0x0303) + b"\x11" * 32 + vec(b"\x22" * 32, 1) + vec(b"".join(u16(c) for c in ciphers)) + vec(b"\x00", 1) + vec(body)
    hs = handshake(1, hello)
    if not split:
        return record(22, hs)
    return b"".join(record(22, hs[i:i + split]) for i in range(0, len(hs), split))


def server_hello(cipher: int = 0xC02F, version: int = 0x0303) -> bytes:
    exts = ext(0xFF01, b"\x00")
    if version == 0x0304:
        exts += ext(0x2B, u16(0x0304))
    return record(22, handshake(2, u16(0x0303) + b"\x33" * 32 + vec(b"", 1) + u16(cipher) + b"\x00" + vec(exts)))


def certificate_record(der: bytes) -> bytes:
    return record(22, handshake(11, vec(vec(der, 3), 3)) + handshake(14, b""))


def self_signed() -> bytes:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "JP"), x509.NameAttribute(NameOID.COMMON_NAME, "t.example")])
    t0 = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(0x0ABC).not_valid_before(t0).not_valid_after(t0 + datetime.timedelta(days=30))
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.DER)


def run(chunks: list[tuple[int, bytes]], step: int = 0) -> RecordingContext:
    ctx = RecordingContext(flow=tflow(sport=443))
    p = TlsParser(ctx)
    for d, data in chunks:
        for i in range(0, len(data), step or len(data)):
            p.feed(d, data[i:i + (step or len(data))], 1.0)
    p.close(2.0)
    validate_lines(eve_lines([ctx]))
    return ctx


def test_ja4_and_ja3_of_a_known_chrome_hello_grease_removed() -> None:
    # Reference values published with this ClientHello's JA4_ro/JA3 strings (browserleaks sample).
    fp, raw = ja4(CHROME_CIPHERS, CHROME_EXTS, CHROME_SIGALGS, [0x0304, 0x0303], 0x0303, "h2", True)
    assert fp == "t13d1516h2_8daaf6152771_d8a2da3f94cd"
    assert raw.startswith("t13d1516h2_002f,0035,009c")
    ctx = run([(TO_SERVER, client_hello(split=50)), (TO_CLIENT, server_hello())], step=17)
    tls = ctx.event_bodies("tls")[0]["tls"]
    assert tls["ja4"] == "t13d1516h2_8daaf6152771_d8a2da3f94cd"
    assert tls["ja3"]["string"].startswith("771,4865-4866-4867-49195") and "2570" not in tls["ja3"]["string"]
    assert tls["client_alpns"] == ["h2", "http/1.1"] and tls["client_versions"] == ["TLS 1.3", "TLS 1.2"]


def test_ja4_alpn_and_no_sni_forms() -> None:
    assert ja4([0x1301], [0x000D], [0x0403], [], 0x0303, "", False)[0].startswith("t12i010100_")
    assert ja4([0x1301], [0x0010], [], [], 0x0303, "\x01x\xff", True)[0][8:10] == "0f"
    assert ja4([], [], [], [], 0x0301, "", True)[0] == "t10d000000_000000000000_000000000000"


def test_tls12_server_side_cipher_certificate_and_policy_info() -> None:
    der = self_signed()
    ctx = run([(TO_SERVER, client_hello()), (TO_CLIENT, server_hello(0x0005) + certificate_record(der))], step=9)
    tls = ctx.event_bodies("tls")[0]["tls"]
    assert (tls["version"], tls["cipher_suite"], tls["cipher_id"]) == ("TLS 1.2", "TLS_RSA_WITH_RC4_128_SHA", 5)
    assert (tls["subject"], tls["issuerdn"], tls["serial"]) == ("C=JP, CN=t.example", "C=JP, CN=t.example", "0A:BC")
    assert (tls["notbefore"], tls["notafter"]) == ("2024-01-01T00:00:00", "2024-01-31T00:00:00")
    info = ctx.tls_infos[0]
    assert (info["version"], info["version_id"], info["cipher_suite"], info["cipher_name"], info["sni"]) == (
        "TLSv1.2", 0x0303, 5, "TLS_RSA_WITH_RC4_128_SHA", "secret.example.jp")
    assert ctx.names == [(ctx.flow.server, "secret.example.jp", "tls")]


def test_tls13_is_logged_at_server_hello() -> None:
    ctx = run([(TO_SERVER, client_hello()), (TO_CLIENT, server_hello(0x1301, 0x0304) + record(23, b"\x00" * 40))])
    tls = ctx.event_bodies("tls")[0]["tls"]
    assert (tls["version"], tls["cipher_suite"]) == ("TLS 1.3", "TLS_AES_128_GCM_SHA256")
    assert len(ctx.event_bodies("tls")) == 1 and "subject" not in tls


def test_client_only_and_garbage() -> None:
    ctx = run([(TO_SERVER, client_hello())])
    assert ctx.event_bodies("tls")[0]["tls"]["version"] == "UNDETERMINED" and ctx.tls_infos == []
    ctx = run([(TO_SERVER, b"\x16\x03\x01\x00\x06\x01\x00\x00\x02\x03\x03")])
    assert "tls.handshake_malformed" in ctx.anomalies
    ctx = run([(TO_SERVER, b"\x17\x09" + b"x" * 30)])
    assert "tls.record_invalid" in ctx.anomalies


CAPTURE = PCAPS / "tls-sessions.pcap"


def test_real_sessions_match_tshark_ja3() -> None:
    r = replay(CAPTURE)
    events = [c.event_bodies("tls")[0]["tls"] for c in r.contexts]
    assert [(e["sni"], e["version"], e["cipher_suite"]) for e in events] == [
        ("secret.example.jp", "TLS 1.2", "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384"),
        ("secret.example.jp", "TLS 1.3", "TLS_AES_256_GCM_SHA384"),
        ("legacy.example.jp", "TLS 1.2", "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA")]
    assert events[0]["subject"] == "C=JP, O=leakmon lab, CN=leakmon-lab.example" and events[0]["serial"] == "01:EA:C0:DE"
    assert "subject" not in events[1]  # TLS 1.3 certificates are encrypted
    assert [e["ja4"][:10] for e in events] == ["t12d2807h2", "t13d0412h2", "t12d020700"]
    validate_lines(eve_lines(r.contexts))
    if shutil.which("tshark") is None:
        pytest.skip("tshark not installed")
    out = subprocess.run(["tshark", "-r", str(CAPTURE), "-Y", "tls.handshake.type==1 || tls.handshake.type==2",
                          "-T", "fields", "-e", "tls.handshake.ja3", "-e", "tls.handshake.ja3s"],
                         capture_output=True, text=True, check=True).stdout.split()
    assert out == [x for e in events for x in (e["ja3"]["hash"], e["ja3s"]["hash"])]


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_fuzz_mutated_handshakes_never_raise(data: st.DataObject) -> None:
    ctx = RecordingContext(flow=tflow(sport=443))
    p = TlsParser(ctx)
    for d, blob in ((TO_SERVER, client_hello(split=data.draw(st.integers(0, 90)))),
                    (TO_CLIENT, server_hello() + certificate_record(b"\x30\x03\x02\x01\x00"))):
        b = bytearray(blob)
        for _ in range(data.draw(st.integers(0, 8))):
            b[data.draw(st.integers(0, len(b) - 1))] = data.draw(st.integers(0, 255))
        step = data.draw(st.integers(1, 100))
        for i in range(0, len(b), step):
            p.feed(d, bytes(b[i:i + step]), 1.0)
    p.close(2.0)
    assert len(ctx.event_bodies("tls")) <= 1
    assert all(len(s.records) <= (1 << 14) + 2048 + 5 for s in p.sides)


# The list helpers as they were before the C-level versions (frozen reference).
def _ref_u16_list(raw: bytes) -> list[int]:
    return [int.from_bytes(raw[k:k + 2], "big") for k in range(0, len(raw) - 1, 2)]


def _ref_hex4(values: list[int]) -> str:
    return ",".join(f"{v:04x}" for v in values)


def _ref_dashed(values: list[int]) -> str:
    return "-".join(str(v) for v in values)


def test_grease_set_is_the_grease_predicate() -> None:
    from monitor.applayer.tls import _GREASE, is_grease

    assert [v for v in range(0x10000) if v in _GREASE] == [v for v in range(0x10000) if is_grease(v)]
    assert len(_GREASE) == 16


@settings(max_examples=300)
@given(raw=st.binary(max_size=80), values=st.lists(st.integers(0, 0xFFFF), max_size=40))
def test_list_helpers_match_their_reference(raw: bytes, values: list[int]) -> None:
    from monitor.applayer.tls import _hex4, _Reader, ja3_string

    assert _Reader(raw).u16_list() == _ref_u16_list(raw)
    assert _hex4(values) == _ref_hex4(values)
    assert ja3_string(771, values, values[:3], values[3:], [0]) == (
        f"771,{_ref_dashed(values)},{_ref_dashed(values[:3])},{_ref_dashed(values[3:])},0")


@settings(max_examples=150)
@given(ciphers=st.lists(st.integers(0, 0xFFFF), max_size=30), exts=st.lists(
    st.sampled_from([0x0000, 0x0010, 0x000A, 0x000B, 0x000D, 0x002B, 0x0017, 0xFF01, 0x0A0A, 0x4A4A]),
    max_size=10, unique=True), sigalgs=st.lists(st.integers(1, 0xFFFF), min_size=1, max_size=12),
    versions=st.lists(st.sampled_from([0x0304, 0x0303, 0x0302, 0x7A7A, 0x0A0A]), min_size=1, max_size=4),
    grease=st.booleans())
def test_generated_hellos_fingerprint_as_the_reference_computes(
        ciphers: list[int], exts: list[int], sigalgs: list[int], versions: list[int], grease: bool) -> None:
    """JA3/JA4 of generated ClientHellos (GREASE anywhere) equal what the reference list
    helpers and the GREASE predicate give from the same fields."""
    from monitor.applayer.tls import is_grease, ja4, parse_client_hello

    rec = client_hello(ciphers=ciphers, exts=exts, grease=grease, sigalgs=sigalgs, versions=versions)
    info = parse_client_hello(rec[9:])
    all_ciphers = ([0x0A0A] if grease else []) + ciphers
    all_exts = ([0x1A1A] if grease else []) + exts
    want_ciphers = [c for c in all_ciphers if not is_grease(c)]
    want_exts = [e for e in all_exts if not is_grease(e)]
    assert info["ciphers"] == want_ciphers and info["extensions"] == want_exts
    want_sig = [s for s in sigalgs if not is_grease(s)] if 0x000D in exts else []
    want_versions = [v for v in ([0x3A3A] if grease else []) + versions if not is_grease(v)] if 0x002B in exts else []
    groups = [0x001D, 0x0017, 0x0018] if 0x000A in exts else []
    points = [0] if 0x000B in exts else []
    assert (info["sig_algs"], info["versions"], info["groups"], info["point_formats"]) == (
        want_sig, want_versions, groups, points)
    ja3 = f"771,{_ref_dashed(want_ciphers)},{_ref_dashed(want_exts)},{_ref_dashed(groups)},{_ref_dashed(points)}"
    assert info["ja3"]["string"] == ja3
    assert (info["ja4"], info["ja4_r"]) == ja4(want_ciphers, want_exts, want_sig, want_versions, 0x0303,
                                                 "h2" if 0x0010 in exts else "", 0x0000 in exts)
    e_raw = _ref_hex4(sorted(e for e in want_exts if e not in (0x0000, 0x0010)))
    if want_sig:
        e_raw += "_" + _ref_hex4(want_sig)
    assert info["ja4_r"].split("_", 2)[1:] == [_ref_hex4(sorted(want_ciphers)), e_raw]
