"""Record the SMTP and FTP sample captures (real clients and servers in network namespaces),
and craft the BDAT/CHUNKING one (aiosmtpd has no CHUNKING) with scapy.

    sudo python3 pcaps/make_mail_ftp.py          # writes pcaps/mail-*.pcap, pcaps/ftp-*.pcap

* ``mail-smtplib.pcap``: aiosmtpd server, smtplib client, four mails in one session:
  an ISO-2022-JP text mail with an RFC 2047 (ISO-2022-JP, B) Japanese subject; a multipart
  mail with a base64 .docx attachment whose Japanese name is an RFC 2231 parameter; a
  quoted-printable Shift_JIS body; an 8bit EUC-JP body with a dot-stuffed line.
* ``mail-starttls.pcap``: the same server with STARTTLS (self-signed key made on the fly);
  smtplib upgrades, then sends a mail inside TLS.
* ``mail-bdat.pcap``: crafted: EHLO with PIPELINING + CHUNKING, a multipart mail whose
  base64 attachment is split over three pipelined BDAT chunks (cut mid-line), then a second
  mail in one ``BDAT n LAST``.
* ``ftp-ftplib.pcap``: pyftpdlib server, ftplib client: passive (PASV) STOR/RETR/APPE/STOU/
  LIST/NLST/MLSD, active (PORT) STOR/RETR over IPv4; passive (EPSV) and active (EPRT)
  STOR/RETR over IPv6.

Every payload is deterministic (fixed bytes, fixed dates and zip timestamps), so the tests
assert exact names, sizes and SHA-256 values. Needs root, iproute2, tcpdump (pcaps/lab.py).
"""

from __future__ import annotations

import io
import os
import sys
import tempfile
import textwrap
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pcaps.lab import Lab  # noqa: E402

HERE = Path(__file__).resolve().parent
MARKER = "LEAKMON-TEST-MARKER"

# ------------------------------------------------------------------ payloads


def docx_bytes() -> bytes:
    """A minimal .docx (zip, stored dates fixed) whose text carries a Japanese marker line."""
    buf = io.BytesIO()
    doc = ('<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
           '<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main">'
           f'<w:body><w:p><w:r><w:t>注意 取扱注意 設計図面 {MARKER}-DOCX</w:t></w:r></w:p></w:body></w:document>')
    parts = {
        "[Content_Types].xml": '<?xml version="1.0" encoding="UTF-8"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"><Override PartName="/word/document.xml" ContentType="application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"/></Types>',
        "word/document.xml": doc,
    }
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, text in parts.items():
            info = zipfile.ZipInfo(name, date_time=(2024, 4, 1, 9, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, text.encode("utf-8"))
    return buf.getvalue()


def encoded_word(text: str, charset: str, codec: str) -> bytes:
    """An RFC 2047 B encoded word."""
    import base64

    return b"=?" + charset.encode() + b"?B?" + base64.b64encode(text.encode(codec)) + b"?="


def mail_messages() -> list[bytes]:
    """The four raw messages smtplib sends (CRLF line ends, before dot-stuffing)."""
    import base64
    import quopri
    from email.header import Header

    subject = Header("【機密】設計図面の送付について", "iso-2022-jp").encode()
    body1 = ("関係各位\n\n設計図面を送付します。取扱注意。\n" f"{MARKER}-JIS\n").encode("iso-2022-jp")
    m1 = (b"From: " + encoded_word("山田", "ISO-2022-JP", "iso2022_jp") + b" <yamada@lab.example>\r\n"
          b"To: partner@lab.example\r\n"
          b"Subject: " + subject.encode("ascii") + b"\r\n"
          b"Date: Mon, 01 Apr 2024 09:00:00 +0900\r\n"
          b"Message-ID: <jis-1@lab.example>\r\n"
          b"MIME-Version: 1.0\r\n"
          b"Content-Type: text/plain; charset=ISO-2022-JP\r\n"
          b"Content-Transfer-Encoding: 7bit\r\n\r\n" + body1.replace(b"\n", b"\r\n"))

    attachment = base64.encodebytes(docx_bytes()).replace(b"\n", b"\r\n")
    m2 = (b"From: yamada@lab.example\r\nTo: partner@lab.example, " + encoded_word("鈴木", "UTF-8", "utf-8")
          + b" <suzuki@lab.example>\r\n"
          b"Cc: boss@lab.example\r\n"
          b"Subject: " + encoded_word("設計書", "UTF-8", "utf-8") + b" =?UTF-8?Q?_=E9=80=81=E4=BB=98?=\r\n"
          b"Date: Mon, 01 Apr 2024 09:01:00 +0900\r\nMessage-ID: <docx-2@lab.example>\r\nMIME-Version: 1.0\r\n"
          b'Content-Type: multipart/mixed; boundary="==b2=="\r\n\r\n'
          b"This is a multi-part message in MIME format.\r\n"
          b"--==b2==\r\nContent-Type: text/plain; charset=UTF-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
          + "資料を添付します。 https://files.lab.example/share/123\r\n".encode() +
          b"--==b2==\r\n"
          b"Content-Type: application/vnd.openxmlformats-officedocument.wordprocessingml.document;\r\n"
          b" name*=UTF-8''%E8%A8%AD%E8%A8%88%E6%9B%B8.docx\r\n"
          b"Content-Transfer-Encoding: base64\r\n"
          b"Content-Disposition: attachment;\r\n"
          b" filename*0*=UTF-8''%E8%A8%AD%E8%A8%88%E6%9B%B8%EF%BC%88;\r\n"
          b" filename*1*=%E7%A4%BE%E5%A4%96%E7%A7%98%EF%BC%89.docx\r\n\r\n"
          + attachment + b"--==b2==--\r\n")

    sjis = ("見積書の件\n単価は社外秘です。\n" f"{MARKER}-SJIS ① ㈱\n").encode("cp932")
    m3 = (b"From: sato@lab.example\r\nTo: partner@lab.example\r\n"
          b"Subject: " + encoded_word("見積書", "Shift_JIS", "cp932") + b"\r\n"
          b"Date: Mon, 01 Apr 2024 09:02:00 +0900\r\nMessage-ID: <sjis-3@lab.example>\r\nMIME-Version: 1.0\r\n"
          b"Content-Type: text/plain; charset=Shift_JIS\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
          + quopri.encodestring(sjis).replace(b"\n", b"\r\n"))

    euc = ("議事録\n.先頭がドットの行\n" f"{MARKER}-EUC\n").encode("euc_jp")
    m4 = (b"From: tanaka@lab.example\r\nTo: partner@lab.example\r\n"
          b"Subject: " + encoded_word("議事録", "EUC-JP", "euc_jp") + b"\r\n"
          b"Date: Mon, 01 Apr 2024 09:03:00 +0900\r\nMessage-ID: <euc-4@lab.example>\r\nMIME-Version: 1.0\r\n"
          b"Content-Type: text/plain; charset=EUC-JP\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
          + euc.replace(b"\n", b"\r\n"))
    return [m1, m2, m3, m4]


def ftp_payloads() -> dict[str, bytes]:
    """File name -> content for the FTP session (uploads are made from these bytes)."""
    return {
        "upload-passive.txt": ("社外秘 passive upload\n" + f"{MARKER}-FTP-PASV\n" * 40).encode("utf-8"),
        "upload-active.bin": bytes(range(256)) * 64,
        "report-v6.txt": (f"{MARKER}-FTP-V6 " * 100).encode("ascii"),
        "served.txt": ("server side file 仕様書\n" * 200).encode("utf-8"),
        "append.txt": b"appended line\n" * 10,
        "unique.txt": b"stou payload\n" * 5,
    }


# ------------------------------------------------------------------ SMTP (real clients)

SMTP_SERVER = textwrap.dedent('''
    import asyncio, ssl, sys
    from aiosmtpd.controller import Controller
    from aiosmtpd.handlers import Sink
    tls = None
    if len(sys.argv) > 2:
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(sys.argv[2], sys.argv[3])
    c = Controller(Sink(), hostname=sys.argv[1], port=25, server_hostname="mx.lab.example",
                   tls_context=tls, decode_data=False)
    c.start()
    import time
    while True:
        time.sleep(1)
''')

SMTP_CLIENT = textwrap.dedent('''
    import smtplib, ssl, sys, pickle
    msgs = pickle.loads(bytes.fromhex(sys.stdin.read()))
    s = smtplib.SMTP(sys.argv[1], 25, local_hostname="ws01.lab.example", timeout=20)
    if sys.argv[2] == "starttls":
        ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
        s.starttls(context=ctx)
    s.ehlo("ws01.lab.example")
    for m in msgs:
        s.sendmail("yamada@lab.example", ["partner@lab.example"], m)
    s.quit()
''')


def _self_signed(tmp: str) -> tuple[str, str]:
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mx.lab.example")])
    now = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=3650))
            .sign(key, hashes.SHA256()))
    cpath, kpath = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
    Path(cpath).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    Path(kpath).write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption()))
    return cpath, kpath


def record_smtp(out: Path, starttls: bool) -> None:
    import pickle

    msgs = mail_messages() if not starttls else mail_messages()[:1]
    with tempfile.TemporaryDirectory() as tmp, Lab("mailsm") as lab:
        argv = ["python3", "-c", SMTP_SERVER, lab.server_ip]
        if starttls:
            argv += list(_self_signed(tmp))
        with lab.capture(str(out), bpf="tcp port 25"):
            lab.server(argv)
            lab.wait_port(25)
            lab.client(["python3", "-c", SMTP_CLIENT, lab.server_ip, "starttls" if starttls else "plain"],
                       input=pickle.dumps(msgs).hex().encode())


# ------------------------------------------------------------------ SMTP BDAT (crafted)


def bdat_session() -> list[tuple[int, bytes]]:
    """(direction, bytes) of a pipelined CHUNKING session; 0 = client, 1 = server."""
    import base64

    blob = bytes((i * 7 + 3) % 256 for i in range(3000))
    b64 = base64.encodebytes(blob).replace(b"\n", b"\r\n")
    msg1 = (b"From: kato@lab.example\r\nTo: partner@lab.example\r\nSubject: " + encoded_word("BDAT テスト", "UTF-8", "utf-8") + b"\r\n"
            b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="bd"\r\n\r\n'
            b"--bd\r\nContent-Type: text/plain; charset=UTF-8\r\n\r\n" + f"{MARKER}-BDAT\r\n".encode() +
            b'--bd\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename="blob.bin"\r\n'
            b"Content-Transfer-Encoding: base64\r\n\r\n" + b64 + b"--bd--\r\n")
    cut1, cut2 = 500, 500 + len(b64) // 2 + 7  # the second cut lands mid base64 line
    chunks = [msg1[:cut1], msg1[cut1:cut2], msg1[cut2:]]
    msg2 = (b"From: kato@lab.example\r\nTo: other@lab.example\r\nSubject: second BDAT mail\r\n\r\n"
            b"." + f"{MARKER}-BDAT-2 a line starting with a dot, not stuffed in BDAT\r\n".encode())
    conv: list[tuple[int, bytes]] = [
        (1, b"220 mx.lab.example ESMTP\r\n"),
        (0, b"EHLO ws02.lab.example\r\n"),
        (1, b"250-mx.lab.example\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 CHUNKING\r\n"),
        (0, b"MAIL FROM:<kato@lab.example>\r\nRCPT TO:<partner@lab.example>\r\n"),
        (1, b"250 OK\r\n250 OK\r\n"),
        (0, b"BDAT %d\r\n" % len(chunks[0]) + chunks[0] + b"BDAT %d\r\n" % len(chunks[1]) + chunks[1][:300]),
        (0, chunks[1][300:] + b"BDAT %d LAST\r\n" % len(chunks[2]) + chunks[2]),
        (1, b"250 2.0.0 chunk 1\r\n250 2.0.0 chunk 2\r\n250 2.0.0 Message accepted\r\n"),
        (0, b"MAIL FROM:<kato@lab.example>\r\nRCPT TO:<other@lab.example>\r\nBDAT %d LAST\r\n" % len(msg2) + msg2),
        (1, b"250 OK\r\n250 OK\r\n250 2.0.0 Message accepted\r\n"),
        (0, b"QUIT\r\n"),
        (1, b"221 Bye\r\n"),
    ]
    return conv


def craft_tcp(out: Path, conv: list[tuple[int, bytes]], cport: int = 40025, sport: int = 25,
              mss: int = 1400) -> None:
    from scapy.all import IP, TCP, Ether, wrpcap  # type: ignore[attr-defined]

    c_ip, s_ip = "10.77.0.1", "10.77.0.2"
    c_mac, s_mac = "02:00:00:00:00:01", "02:00:00:00:00:02"
    seq = [1000, 5000]
    pkts = []
    t = 1711929600.0

    def pkt(d: int, flags: str, payload: bytes = b"") -> None:
        nonlocal t
        src, dst = (c_ip, s_ip) if d == 0 else (s_ip, c_ip)
        sp, dp = (cport, sport) if d == 0 else (sport, cport)
        smac, dmac = (c_mac, s_mac) if d == 0 else (s_mac, c_mac)
        p = Ether(src=smac, dst=dmac) / IP(src=src, dst=dst) / TCP(sport=sp, dport=dp, flags=flags, seq=seq[d],
                                                                    ack=seq[1 - d], window=65535) / payload
        p.time = t
        t += 0.001
        pkts.append(p)
        seq[d] += len(payload) + (1 if "S" in flags or "F" in flags else 0)

    seq[0] -= 1
    pkt(0, "S")
    seq[1] -= 1
    pkt(1, "SA")
    pkt(0, "A")
    for d, data in conv:
        for i in range(0, len(data), mss):
            pkt(d, "PA", data[i : i + mss])
        pkt(1 - d, "A")
    pkt(0, "FA")
    pkt(1, "FA")
    pkt(0, "A")
    wrpcap(str(out), pkts)


# ------------------------------------------------------------------ FTP (real clients)

FTP_SERVER = textwrap.dedent('''
    import sys
    from pyftpdlib.authorizers import DummyAuthorizer
    from pyftpdlib.handlers import FTPHandler
    from pyftpdlib.servers import FTPServer
    auth = DummyAuthorizer()
    auth.add_user("alice", "s3cret-pass", sys.argv[2], perm="elradfmwMT")
    class H(FTPHandler):
        authorizer = auth
        passive_ports = range(30000, 30050)
        permit_foreign_addresses = True
        banner = "lab ftp ready"
    FTPServer((sys.argv[1], 21), H).serve_forever()
''')

FTP_CLIENT = textwrap.dedent('''
    import ftplib, io, sys, pickle
    files = pickle.loads(bytes.fromhex(sys.stdin.read()))
    def session(host, passive, plan):
        f = ftplib.FTP(timeout=20)
        f.connect(host, 21)
        f.login("alice", "s3cret-pass")
        f.set_pasv(passive)
        for op, name in plan:
            if op == "STOR":
                f.storbinary("STOR " + name, io.BytesIO(files[name]))
            elif op == "APPE":
                f.storbinary("APPE " + name, io.BytesIO(files["append.txt"]))
            elif op == "STOU":
                f.storbinary("STOU " + name, io.BytesIO(files["unique.txt"]))
            elif op == "RETR":
                out = io.BytesIO(); f.retrbinary("RETR " + name, out.write)
                assert out.getvalue() == files.get(name, out.getvalue())
            elif op in ("LIST", "NLST", "MLSD"):
                f.retrlines(op, lambda line: None)
        f.quit()
    v4, v6 = sys.argv[1], sys.argv[2]
    session(v4, True, [("STOR", "upload-passive.txt"), ("RETR", "served.txt"), ("APPE", "upload-passive.txt"),
                       ("STOU", "unique.txt"), ("LIST", ""), ("NLST", ""), ("MLSD", "")])
    session(v4, False, [("STOR", "upload-active.bin"), ("RETR", "served.txt")])
    session(v6, True, [("STOR", "report-v6.txt"), ("RETR", "served.txt")])
    session(v6, False, [("RETR", "report-v6.txt")])
''')


def record_ftp(out: Path) -> None:
    import pickle

    files = ftp_payloads()
    with tempfile.TemporaryDirectory() as home, Lab("mailft") as lab:
        os.chmod(home, 0o777)
        Path(home, "served.txt").write_bytes(files["served.txt"])
        with lab.capture(str(out), bpf="tcp"):
            lab.server(["python3", "-c", FTP_SERVER, lab.server_ip, home])
            lab.server(["python3", "-c", FTP_SERVER, lab.server_ip6, home])
            lab.wait_port(21)
            lab.wait_port(21, ip=lab.server_ip6)
            lab.client(["python3", "-c", FTP_CLIENT, lab.server_ip, lab.server_ip6],
                       input=pickle.dumps(files).hex().encode())


def main() -> None:
    record_smtp(HERE / "mail-smtplib.pcap", starttls=False)
    record_smtp(HERE / "mail-starttls.pcap", starttls=True)
    craft_tcp(HERE / "mail-bdat.pcap", bdat_session())
    record_ftp(HERE / "ftp-ftplib.pcap")
    for name in ("mail-smtplib.pcap", "mail-starttls.pcap", "mail-bdat.pcap", "ftp-ftplib.pcap"):
        print(name, (HERE / name).stat().st_size, "bytes")


if __name__ == "__main__":
    main()
