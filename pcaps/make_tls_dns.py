#!/usr/bin/env python3
"""Record real TLS handshakes and DNS lookups in a network-namespace lab.

    python3 pcaps/make_tls_dns.py        # writes pcaps/tls-sessions.pcap and pcaps/dns-lookups.pcap

TLS: ``openssl s_server`` with a self-signed certificate (CN leakmon-lab.example, fixed
serial) on 8443; clients are curl (TLS 1.2 and TLS 1.3, SNI secret.example.jp) and
``openssl s_client`` (TLS 1.2, AES128-SHA, SNI legacy.example.jp).

DNS: a tiny UDP+TCP responder (this file with ``--dns-serve``) answering A, AAAA, CNAME,
MX, TXT and PTR from a fixed zone with name compression; the client is Python's socket
API sending hand-built queries over UDP and one over TCP.
"""

from __future__ import annotations

import argparse
import datetime
import socket
import socketserver
import struct
import sys
import tempfile
import threading
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

TLS_PORT = 8443
CERT_CN = "leakmon-lab.example"
CERT_SERIAL = 0x1EAC0DE

ZONE: dict[tuple[str, int], list[tuple[int, bytes | str]]] = {
    ("files.example.jp", 1): [(1, "10.77.0.2")],
    ("files.example.jp", 28): [(28, "fd77::2")],
    ("www.example.jp", 1): [(5, "cdn.example.net"), (1, "10.77.0.9")],
    ("example.jp", 15): [(15, "mail.example.jp")],
    ("example.jp", 16): [(16, "v=spf1 -all")],
    ("2.0.77.10.in-addr.arpa", 12): [(12, "files.example.jp")],
}
QUERIES = [("files.example.jp", 1), ("files.example.jp", 28), ("www.example.jp", 1),
           ("example.jp", 15), ("example.jp", 16), ("2.0.77.10.in-addr.arpa", 12), ("missing.example.jp", 1)]


# ---------------------------------------------------------------- DNS wire format


def encode_name(name: str, table: dict[str, int], base: int) -> bytes:
    """Name with RFC 1035 compression against names already written (``table``: suffix -> offset)."""
    out = b""
    labels = name.split(".")
    for i in range(len(labels)):
        suffix = ".".join(labels[i:])
        if suffix in table:
            return out + struct.pack("!H", 0xC000 | table[suffix])
        if base + len(out) < 0x3FFF:
            table[suffix] = base + len(out)
        lab = labels[i].encode()
        out += bytes([len(lab)]) + lab
    return out + b"\x00"


def build_query(ident: int, name: str, qtype: int) -> bytes:
    return struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0) + encode_name(name, {}, 12) + struct.pack("!HH", qtype, 1)


def build_answer(query: bytes) -> bytes:
    ident, _flags = struct.unpack("!HH", query[:4])
    pos, labels = 12, []
    while query[pos]:
        n = query[pos]
        labels.append(query[pos + 1:pos + 1 + n].decode())
        pos += 1 + n
    qname = ".".join(labels)
    qtype = struct.unpack("!H", query[pos + 1:pos + 3])[0]
    records = ZONE.get((qname, qtype), [])
    table: dict[str, int] = {}
    msg = bytearray(struct.pack("!HHHHHH", ident, 0x8180 if records else 0x8183, 1, len(records), 0, 0))
    msg += encode_name(qname, table, len(msg)) + struct.pack("!HH", qtype, 1)
    owner = qname
    for rtype, value in records:
        msg += encode_name(owner, table, len(msg)) + struct.pack("!HHI", rtype, 1, 300)
        if rtype == 1:
            rdata = socket.inet_pton(socket.AF_INET, str(value))
        elif rtype == 28:
            rdata = socket.inet_pton(socket.AF_INET6, str(value))
        elif rtype in (5, 12):
            rdata = encode_name(str(value), table, len(msg) + 2)
        elif rtype == 15:
            rdata = struct.pack("!H", 10) + encode_name(str(value), table, len(msg) + 4)
        else:
            txt = str(value).encode()
            rdata = bytes([len(txt)]) + txt
        msg += struct.pack("!H", len(rdata)) + rdata
        if rtype == 5:
            owner = str(value)
    return bytes(msg)


def dns_serve(port: int) -> None:
    class Udp(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            data, sock = self.request
            sock.sendto(build_answer(data), self.client_address)

    class Tcp(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            n = struct.unpack("!H", self.rfile.read(2))[0]
            answer = build_answer(self.rfile.read(n))
            self.wfile.write(struct.pack("!H", len(answer)) + answer)

    socketserver.ThreadingUDPServer.allow_reuse_address = True
    socketserver.ThreadingTCPServer.allow_reuse_address = True
    udp = socketserver.ThreadingUDPServer(("0.0.0.0", port), Udp)
    tcp = socketserver.ThreadingTCPServer(("0.0.0.0", port), Tcp)
    threading.Thread(target=udp.serve_forever, daemon=True).start()
    tcp.serve_forever()


def dns_client(server: str, port: int) -> None:
    for i, (name, qtype) in enumerate(QUERIES):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(3)
        s.sendto(build_query(0x4C00 + i, name, qtype), (server, port))
        s.recv(4096)
        s.close()
    q = build_query(0x4CFF, "files.example.jp", 1)
    with socket.create_connection((server, port), timeout=3) as t:
        t.sendall(struct.pack("!H", len(q)) + q)
        t.recv(4096)


# ---------------------------------------------------------------- TLS


def write_cert(folder: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "JP"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "leakmon lab"),
                      x509.NameAttribute(NameOID.COMMON_NAME, CERT_CN)])
    start = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(CERT_SERIAL).not_valid_before(start).not_valid_after(start + datetime.timedelta(days=3650))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(CERT_CN)]), critical=False)
            .sign(key, hashes.SHA256()))
    cpath, kpath = folder / "cert.pem", folder / "key.pem"
    cpath.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    kpath.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()))
    return cpath, kpath


def record(tls_out: Path, dns_out: Path) -> None:
    from pcaps.lab import Lab

    with tempfile.TemporaryDirectory() as tmp:
        cert, key = write_cert(Path(tmp))
        with Lab("lmtls") as lab:
            lab.server(["openssl", "s_server", "-quiet", "-accept", str(TLS_PORT), "-cert", str(cert),
                        "-key", str(key), "-www"])
            lab.wait_port(TLS_PORT)
            with lab.capture(str(tls_out), bpf=f"tcp port {TLS_PORT}"):
                url = f"https://secret.example.jp:{TLS_PORT}/"
                resolve = f"secret.example.jp:{TLS_PORT}:{lab.server_ip}"
                lab.client(["curl", "-sk", "-o", "/dev/null", "--tlsv1.2", "--tls-max", "1.2",
                            "--resolve", resolve, url])
                lab.client(["curl", "-sk", "-o", "/dev/null", "--tlsv1.3", "--resolve", resolve, url])
                lab.client(["openssl", "s_client", "-connect", f"{lab.server_ip}:{TLS_PORT}", "-tls1_2",
                            "-cipher", "ECDHE-ECDSA-AES128-SHA", "-servername", "legacy.example.jp"],
                           input=b"Q\n")
        with Lab("lmdns") as lab:
            lab.server([sys.executable, str(HERE / "make_tls_dns.py"), "--dns-serve", "53"])
            lab.wait_port(53)
            with lab.capture(str(dns_out), bpf="port 53"):
                lab.client([sys.executable, str(HERE / "make_tls_dns.py"), "--dns-client", lab.server_ip])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dns-serve", type=int)
    ap.add_argument("--dns-client")
    args = ap.parse_args()
    if args.dns_serve:
        dns_serve(args.dns_serve)
        return
    if args.dns_client:
        dns_client(args.dns_client, 53)
        return
    tls_out, dns_out = HERE / "tls-sessions.pcap", HERE / "dns-lookups.pcap"
    record(tls_out, dns_out)
    for p in (tls_out, dns_out):
        print(f"wrote {p} ({p.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
