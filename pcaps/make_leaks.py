#!/usr/bin/env python3
"""Record the end-to-end leak scenarios: one small capture per scenario under pcaps/leaks/.

    sudo python3 pcaps/make_leaks.py              # all scenarios (about a minute)
    sudo python3 pcaps/make_leaks.py http-form-percent-marker ...   # only these

Real clients and servers in network namespaces (pcaps/lab.py; the client 10.77.0.1 / fd77::1
is the protected side, the server 10.77.0.2 / fd77::2 is outside):

* HTTP: curl against pcaps/upload_server.py (uploads, port 8080) and ``python3 -m http.server``
  (downloads, port 8081);
* SMTP: Python's smtplib and email package (a real MUA library builds the MIME) against aiosmtpd;
* FTP: ftplib against pyftpdlib, passive (PASV/EPSV) and active (PORT);
* TLS: ``openssl s_client`` / curl against ``openssl s_server`` with legacy versions and suites
  enabled (``@SECLEVEL=0``) so the weak-crypto policy has something to find.

The protected test data lives next to the captures and is rewritten by this script:
``pcaps/leaks/protected/docs/装備品仕様書.txt`` (a document registered for partial matching,
indexed into ``pcaps/leaks/protected-docs.idx.json`` with ``leakmon fingerprint index``) and
``pcaps/leaks/protected/drawing-A1234.dwg`` (a file registered by SHA-256 in
``pcaps/leaks-signatures.yaml``). Both are deterministic. The real office documents uploaded
(docx, xlsx, pptx, PDF, zip-in-zip) are the committed ones in tests/data/docs/ (made by
LibreOffice, see tests/data/docs/README.md). Captures are not byte-for-byte reproducible
(ports, ISNs, timestamps, TLS keys); tests/e2e/ reads the committed files and takes the flow
tuples from the captures themselves.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import textwrap
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from pcaps.lab import Lab  # noqa: E402

OUT = HERE / "leaks"
PROTECTED = OUT / "protected"
DOCS_DIR = PROTECTED / "docs"
DRAWING = PROTECTED / "drawing-A1234.dwg"
INDEX = OUT / "protected-docs.idx.json"
TEST_DOCS = ROOT / "tests" / "data" / "docs"

MARKER = "保護すべき情報"
HTTP_PORT, DOWNLOAD_PORT, SMTP_PORT, FTP_PORT, TLS_PORT = 8080, 8081, 25, 21, 8443
PARTNER = "partner.example.jp"
MAX_CAPTURE = 300_000

# ------------------------------------------------------------------ protected test data

# A made-up equipment specification: the "registered document" of the partial-fingerprint
# scenario. No marker appears in it, so only the partial matcher can find an excerpt.
SPEC_TEXT = """\
試作型沿岸監視レーダー装置 技術仕様書（第二版）

第1章 総則
本仕様書は、試作型沿岸監視レーダー装置の性能、構成及び試験方法について定める。装置は沿岸部の固定局舎に設置し、昼夜を問わず海上の小型船舶を探知及び追尾することを目的とする。
本装置の設計にあたっては、既存の監視網との相互運用性を確保するとともに、保守要員の負担を軽減するため、主要な構成品を現地で交換可能な単位に分割すること。

第2章 性能
探知距離は、有効反射断面積一平方メートルの目標に対して二十四海里以上とし、海面状態四においても探知確率八十パーセント以上を維持すること。
追尾処理部は、同時に二百目標以上を追尾でき、目標の速度及び針路を三秒以内に更新すること。アンテナ回転数は毎分二十回転を標準とし、運用者が毎分十回転から四十回転の範囲で変更できること。
送信部は半導体増幅器を用い、単一の増幅器が故障した場合でも出力低下を三デシベル以内に抑える冗長構成とすること。

第3章 構成
装置は、空中線部、送受信部、信号処理部、表示操作部及び電源部から構成する。各部の間は光ファイバーケーブルで接続し、局舎内の配線長は最大百五十メートルまで延長できること。
表示操作部は二台の操作卓からなり、いずれの操作卓からも全機能を操作できること。操作卓の画面には、電子海図の上に追尾目標の航跡を重ねて表示する。

第4章 試験
工場試験では、模擬目標発生器を用いて探知距離及び追尾性能を確認する。現地試験では、協力船舶を所定の航路で航行させ、実際の海面状態における探知性能を記録する。
試験成績書には、試験日時、気象及び海象条件、使用した計測器の校正記録を必ず添付すること。
"""

# The pasted excerpt: two sentences from chapter 2 (about 130 normalised characters).
SPEC_EXCERPT = ("追尾処理部は、同時に二百目標以上を追尾でき、目標の速度及び針路を三秒以内に更新すること。"
                "アンテナ回転数は毎分二十回転を標準とし、運用者が毎分十回転から四十回転の範囲で変更できること。")


def drawing_bytes() -> bytes:
    """A deterministic binary "CAD drawing" (no marker text in any encoding)."""
    out = bytearray(b"AC1032\x00\x00LEAKMON-LAB-DRAWING\x00")
    block = b"drawing-A1234"
    while len(out) < 12_288:
        block = hashlib.sha256(block).digest()
        out += block
    return bytes(out[:12_288])


def one_byte_changed(data: bytes, offset: int = 5000) -> bytes:
    return data[:offset] + bytes([data[offset] ^ 0x01]) + data[offset + 1:]


def marker_text(encoding: str) -> bytes:
    """A short memo carrying the marker, encoded as a real editor would save it."""
    text = f"設計会議メモ（第4回）\r\n本書は{MARKER}を含むため、社外への持ち出しを禁ずる。\r\n次回は五月十日。\r\n"
    if encoding == "utf-16le":
        return b"\xff\xfe" + text.encode("utf-16-le")  # Windows Notepad "Unicode"
    if encoding == "utf-16be":
        return b"\xfe\xff" + text.encode("utf-16-be")
    return text.encode(encoding)


NEAR_MISS_TEXT = (
    "公開資料の確認\r\n"
    "保護すべき情幸 と 取扱注億 は誤記のため訂正する。\r\n"  # one character changed in each marker
    "管理番号 JDA-123-45678 / JDA Confidentail / 社外袐\r\n"
)


def write_protected_data() -> None:
    DOCS_DIR.mkdir(parents=True, exist_ok=True)
    (DOCS_DIR / "装備品仕様書.txt").write_text(SPEC_TEXT, encoding="utf-8")
    DRAWING.write_bytes(drawing_bytes())
    argv = [sys.executable, "-m", "monitor", "fingerprint", "index", str(DOCS_DIR), "-o", str(INDEX)]
    r = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True)
    if r.returncode != 0:  # `leakmon fingerprint` not wired yet: the same function it calls
        subprocess.run([sys.executable, "-m", "detectors.partial", "index", str(DOCS_DIR), "-o", str(INDEX)],
                       cwd=ROOT, check=True)


def nested_zip() -> bytes:
    """zip-in-zip made here (deterministic dates): outer.zip > 設計資料.zip > memo.txt (EUC-JP).

    Both levels are deflated and the memo is long enough to compress, so the marker bytes appear
    only after two levels of decompression (a short member would be written as a stored block).
    """
    memo = marker_text("euc_jp") + "".join(f"議題{i}：試験日程の調整\r\n" for i in range(1, 30)).encode("euc_jp")
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(zipfile.ZipInfo("memo.txt", (2024, 4, 1, 9, 0, 0)), memo, compress_type=zipfile.ZIP_DEFLATED)
    outer = io.BytesIO()
    with zipfile.ZipFile(outer, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(zipfile.ZipInfo("readme.txt", (2024, 4, 1, 9, 0, 0)), b"archive of meeting notes\r\n",
                   compress_type=zipfile.ZIP_DEFLATED)
        info = zipfile.ZipInfo("設計資料.zip", (2024, 4, 1, 9, 0, 0))
        info.flag_bits |= 0x800  # UTF-8 member name, as Info-ZIP and 7-Zip write it
        z.writestr(info, inner.getvalue(), compress_type=zipfile.ZIP_DEFLATED)
    return outer.getvalue()


# ------------------------------------------------------------------ scenarios


@dataclass
class Scenario:
    name: str
    service: str  # http | smtp | ftp | tls
    run: Callable[[Lab, Path], None]
    bpf: str = ""


def _curl(lab: Lab, *args: str) -> None:
    lab.client(["curl", "-s", "-S", "-o", "/dev/null", "--max-time", "20", *args])


def _upload_url(lab: Lab, path: str = "/upload") -> str:
    return f"http://{lab.server_ip}:{HTTP_PORT}{path}"


def _multipart(filename: str, data: bytes, ctype: str) -> Callable[[Lab, Path], None]:
    def run(lab: Lab, tmp: Path) -> None:
        p = tmp / filename
        p.write_bytes(data)
        _curl(lab, "-F", f"file=@{p};type={ctype};filename={filename}", "-F", "comment=see attached",
              _upload_url(lab))
    return run


def _doc(name: str) -> bytes:
    return (TEST_DOCS / name).read_bytes()


def _form_percent(lab: Lab, tmp: Path) -> None:
    # curl --data-urlencode: UTF-8, upper-case hex, as browsers send application/x-www-form-urlencoded.
    _curl(lab, "--data-urlencode", "subject=定例報告", "--data-urlencode", f"body=添付の件、{MARKER}につき取扱い注意。",
          _upload_url(lab, "/form"))


def _form_percent_cp932(lab: Lab, tmp: Path) -> None:
    # A Shift_JIS web form (legacy intranet page): the browser percent-encodes CP932 bytes; lower-case hex
    # as some clients write it. curl sends the body exactly as given.
    enc = "".join(f"%{b:02x}" for b in f"{MARKER}の件".encode("cp932"))
    _curl(lab, "-H", "Content-Type: application/x-www-form-urlencoded; charset=Shift_JIS",
          "--data-binary", f"q={enc}&submit=%91%97%90M", _upload_url(lab, "/search"))


def _json_u(lab: Lab, tmp: Path) -> None:
    body = json.dumps({"title": "週報", "text": f"今週は{MARKER}の整理を行った。"}, ensure_ascii=True)
    _curl(lab, "-H", "Content-Type: application/json", "--data-binary", body, _upload_url(lab, "/api/v1/notes"))


def _json_base64(lab: Lab, tmp: Path) -> None:
    content = base64.b64encode(marker_text("utf-8")).decode()
    body = json.dumps({"filename": "memo.txt", "encoding": "base64", "content": content})
    p = tmp / "body.json"
    p.write_text(body)
    _curl(lab, "-H", "Content-Type: application/json", "--data-binary", f"@{p}", _upload_url(lab, "/api/v1/files"))


def _zip_in_zip(lab: Lab, tmp: Path) -> None:
    p = tmp / "archive.zip"
    p.write_bytes(nested_zip())
    _curl(lab, "-H", "Content-Type: application/zip", "-T", str(p), _upload_url(lab, "/dav/archive.zip"))


def _partial_excerpt(lab: Lab, tmp: Path) -> None:
    text = f"お疲れさまです。先日の資料から抜粋します。{SPEC_EXCERPT}以上、ご確認ください。"
    _curl(lab, "--data-urlencode", "title=質問", "--data-urlencode", f"message={text}", _upload_url(lab, "/board/post"))


def _approved(lab: Lab, tmp: Path) -> None:
    p = tmp / "memo.txt"
    p.write_bytes(marker_text("utf-8"))
    _curl(lab, "--resolve", f"{PARTNER}:{HTTP_PORT}:{lab.server_ip}", "-F", f"file=@{p};type=text/plain",
          f"http://{PARTNER}:{HTTP_PORT}/upload")


def _inbound_download(lab: Lab, tmp: Path) -> None:
    base = f"http://{lab.server_ip}:{DOWNLOAD_PORT}"
    _curl(lab, f"{base}/notice.txt")
    _curl(lab, f"{base}/sample.docx")


HTTP_SCENARIOS = [
    Scenario("http-multipart-utf8-marker", "http", _multipart("会議メモ.txt", marker_text("utf-8"), "text/plain")),
    Scenario("http-multipart-cp932-marker", "http", _multipart("会議メモ_sjis.txt", marker_text("cp932"), "text/plain")),
    Scenario("http-multipart-eucjp-marker", "http", _multipart("memo-euc.txt", marker_text("euc_jp"), "text/plain")),
    Scenario("http-multipart-iso2022jp-marker", "http", _multipart("memo-jis.txt", marker_text("iso2022_jp"), "text/plain")),
    Scenario("http-multipart-utf16le-marker", "http", _multipart("memo-utf16le.txt", marker_text("utf-16le"), "text/plain")),
    Scenario("http-multipart-utf16be-marker", "http", _multipart("memo-utf16be.txt", marker_text("utf-16be"), "text/plain")),
    Scenario("http-form-percent-marker", "http", _form_percent),
    Scenario("http-form-percent-cp932-marker", "http", _form_percent_cp932),
    Scenario("http-json-uescape-marker", "http", _json_u),
    Scenario("http-json-base64-marker", "http", _json_base64),
    Scenario("http-multipart-docx-marker", "http", _multipart(
        "見積仕様.docx", _doc("sample.docx"), "application/vnd.openxmlformats-officedocument.wordprocessingml.document")),
    Scenario("http-multipart-xlsx-marker", "http", _multipart(
        "諸元表.xlsx", _doc("sample.xlsx"), "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet")),
    Scenario("http-multipart-pptx-marker", "http", _multipart(
        "概要説明.pptx", _doc("sample.pptx"), "application/vnd.openxmlformats-officedocument.presentationml.presentation")),
    Scenario("http-multipart-pdf-marker", "http", _multipart("仕様書.pdf", _doc("sample.pdf"), "application/pdf")),
    Scenario("http-put-zip-in-zip-marker", "http", _zip_in_zip),
    Scenario("http-multipart-fingerprint-renamed", "http", _multipart("holiday-photo.jpg", drawing_bytes(), "image/jpeg")),
    Scenario("http-form-partial-excerpt", "http", _partial_excerpt),
    Scenario("http-approved-destination", "http", _approved),
    # negatives
    Scenario("neg-http-near-miss", "http", _multipart("訂正.txt", NEAR_MISS_TEXT.encode("utf-8"), "text/plain")),
    Scenario("neg-http-inbound-download", "http", _inbound_download),
    Scenario("neg-http-fingerprint-one-byte-changed", "http", _multipart(
        "drawing-A1234.dwg", one_byte_changed(drawing_bytes()), "application/octet-stream")),
]


# -- SMTP (smtplib + email package against aiosmtpd)

SMTP_SERVER = textwrap.dedent('''
    import sys, time
    from aiosmtpd.controller import Controller
    from aiosmtpd.handlers import Sink
    Controller(Sink(), hostname=sys.argv[1], port=int(sys.argv[2]), server_hostname="mx.partner.example",
               decode_data=False).start()
    while True:
        time.sleep(1)
''')

SMTP_CLIENT = textwrap.dedent('''
    import pickle, smtplib, sys
    msg = pickle.loads(bytes.fromhex(sys.stdin.read()))
    with smtplib.SMTP(sys.argv[1], int(sys.argv[2]), local_hostname="ws01.corp.example", timeout=20) as s:
        s.send_message(msg)
''')


def _mail_base(subject: str):  # type: ignore[no-untyped-def]
    from email.message import EmailMessage

    m = EmailMessage()
    m["From"] = "yamada@corp.example"
    m["To"] = "tanaka@partner.example"
    m["Subject"] = subject
    m["Date"] = "Mon, 01 Apr 2024 09:00:00 +0900"
    m["Message-ID"] = f"<{hashlib.sha1(subject.encode()).hexdigest()[:12]}@corp.example>"
    return m


def mail_iso2022jp():  # type: ignore[no-untyped-def]
    from email.mime.text import MIMEText

    body = f"田中様\n\nお世話になっております。\n本件は{MARKER}を含みますので、取扱いにご注意ください。\n\n山田\n"
    m = MIMEText(body, "plain", "iso-2022-jp")  # 7bit JIS, as Japanese mailers send
    m["From"] = "yamada@corp.example"
    m["To"] = "tanaka@partner.example"
    m["Subject"] = "定例会議の件"
    m["Date"] = "Mon, 01 Apr 2024 09:00:00 +0900"
    return m


def mail_qp():  # type: ignore[no-untyped-def]
    import email.charset
    from email.mime.text import MIMEText

    cs = email.charset.Charset("utf-8")
    cs.body_encoding = email.charset.QP
    body = ("お世話になっております。" * 3 + f"\n添付の議事録は{MARKER}に該当します。転送しないでください。\n")
    m = MIMEText(body, "plain", cs)  # type: ignore[arg-type]  # a Charset works; typeshed says str
    m["From"] = "yamada@corp.example"
    m["To"] = "tanaka@partner.example"
    m["Subject"] = "議事録"
    m["Date"] = "Mon, 01 Apr 2024 09:00:00 +0900"
    return m


def mail_attachment():  # type: ignore[no-untyped-def]
    m = _mail_base("見積書送付")
    m.set_content("資料を添付いたします。ご査収ください。\n", charset="utf-8")
    m.add_attachment(marker_text("cp932"), maintype="text", subtype="plain", filename="見積条件.txt")
    return m


def _smtp(build: Callable[[], object]) -> Callable[[Lab, Path], None]:
    def run(lab: Lab, tmp: Path) -> None:
        lab.client([sys.executable, "-c", SMTP_CLIENT, lab.server_ip, str(SMTP_PORT)],
                   input=pickle.dumps(build()).hex().encode())
    return run


SMTP_SCENARIOS = [
    Scenario("smtp-iso2022jp-body-marker", "smtp", _smtp(mail_iso2022jp)),
    Scenario("smtp-qp-body-marker", "smtp", _smtp(mail_qp)),
    Scenario("smtp-base64-attachment-marker", "smtp", _smtp(mail_attachment)),
]


# -- FTP (ftplib against pyftpdlib)

FTP_SERVER = textwrap.dedent('''
    import sys
    from pyftpdlib.authorizers import DummyAuthorizer
    from pyftpdlib.handlers import FTPHandler
    from pyftpdlib.servers import FTPServer
    auth = DummyAuthorizer()
    auth.add_user("alice", "lab-pass", sys.argv[2], perm="elradfmwMT")
    class H(FTPHandler):
        authorizer = auth
        passive_ports = range(30000, 30050)
        permit_foreign_addresses = True
    FTPServer((sys.argv[1], 21), H).serve_forever()
''')

FTP_CLIENT = textwrap.dedent('''
    import ftplib, io, sys
    host, passive, name = sys.argv[1], sys.argv[2] == "passive", sys.argv[3]
    data = bytes.fromhex(sys.stdin.read())
    f = ftplib.FTP(timeout=20)
    f.encoding = "utf-8"
    f.connect(host, 21)
    f.login("alice", "lab-pass")
    f.set_pasv(passive)
    f.storbinary("STOR " + name, io.BytesIO(data))
    f.quit()
''')


def _ftp(host_attr: str, mode: str, name: str, data: bytes) -> Callable[[Lab, Path], None]:
    def run(lab: Lab, tmp: Path) -> None:
        lab.client([sys.executable, "-c", FTP_CLIENT, getattr(lab, host_attr), mode, name], input=data.hex().encode())
    return run


FTP_SCENARIOS = [
    Scenario("ftp-stor-passive-marker", "ftp", _ftp("server_ip", "passive", "議事録.txt", marker_text("euc_jp"))),
    Scenario("ftp-stor-active-marker", "ftp", _ftp("server_ip", "active", "minutes.txt", marker_text("utf-8"))),
    Scenario("ftp-stor-epsv-ipv6-marker", "ftp", _ftp("server_ip6", "passive", "memo-v6.txt", marker_text("utf-16le"))),
]


# -- TLS (openssl s_server with legacy versions enabled)


def _s_client(lab: Lab, *args: str) -> None:
    lab.client(["openssl", "s_client", "-connect", f"{lab.server_ip}:{TLS_PORT}", "-servername", "files.partner.example",
                *args], input=b"Q\n")


def _tls10(lab: Lab, tmp: Path) -> None:
    _s_client(lab, "-tls1", "-cipher", "ECDHE-RSA-AES128-SHA:@SECLEVEL=0")


def _tls12_weak_suite(lab: Lab, tmp: Path) -> None:
    _s_client(lab, "-tls1_2", "-cipher", "AES128-SHA:@SECLEVEL=0")  # RSA key transport, CBC, SHA-1


def _tls_compliant(lab: Lab, tmp: Path) -> None:
    _s_client(lab, "-tls1_2", "-cipher", "ECDHE-RSA-AES128-GCM-SHA256")
    resolve = f"files.partner.example:{TLS_PORT}:{lab.server_ip}"
    _curl(lab, "-k", "--tlsv1.3", "--resolve", resolve, f"https://files.partner.example:{TLS_PORT}/")


TLS_SCENARIOS = [
    Scenario("tls-weak-tls10", "tls", _tls10),
    Scenario("tls-weak-cipher-tls12", "tls", _tls12_weak_suite),
    Scenario("neg-tls-compliant", "tls", _tls_compliant),
]

ALL = HTTP_SCENARIOS + SMTP_SCENARIOS + FTP_SCENARIOS + TLS_SCENARIOS


# ------------------------------------------------------------------ labs


def _rsa_cert(tmp: Path) -> tuple[Path, Path]:
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "files.partner.example")])
    start = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(4242).not_valid_before(start).not_valid_after(start + datetime.timedelta(days=3650))
            .sign(key, hashes.SHA256()))
    cpath, kpath = tmp / "cert.pem", tmp / "key.pem"
    cpath.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    kpath.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                        serialization.NoEncryption()))
    return cpath, kpath


def start_servers(service: str, lab: Lab, tmp: Path) -> str:
    """Start the service's servers; returns the capture filter."""
    if service == "http":
        served = tmp / "served"
        served.mkdir()
        (served / "notice.txt").write_bytes(marker_text("utf-8"))
        shutil.copy(TEST_DOCS / "sample.docx", served / "sample.docx")
        lab.server([sys.executable, str(HERE / "upload_server.py"), lab.server_ip, str(HTTP_PORT)])
        lab.server([sys.executable, "-m", "http.server", str(DOWNLOAD_PORT), "--bind", lab.server_ip,
                    "--directory", str(served)])
        lab.wait_port(HTTP_PORT)
        lab.wait_port(DOWNLOAD_PORT)
        return f"tcp port {HTTP_PORT} or tcp port {DOWNLOAD_PORT}"
    if service == "smtp":
        lab.server([sys.executable, "-c", SMTP_SERVER, lab.server_ip, str(SMTP_PORT)])
        lab.wait_port(SMTP_PORT)
        return f"tcp port {SMTP_PORT}"
    if service == "ftp":
        home = tmp / "ftp"
        home.mkdir()
        os.chmod(home, 0o777)
        lab.server([sys.executable, "-c", FTP_SERVER, lab.server_ip, str(home)])
        lab.server([sys.executable, "-c", FTP_SERVER, lab.server_ip6, str(home)])
        lab.wait_port(FTP_PORT)
        lab.wait_port(FTP_PORT, ip=lab.server_ip6)
        return "tcp"
    if service == "tls":
        cert, key = _rsa_cert(tmp)
        lab.server(["openssl", "s_server", "-quiet", "-accept", str(TLS_PORT), "-cert", str(cert), "-key", str(key),
                    "-www", "-cipher", "ALL:@SECLEVEL=0", "-min_protocol", "TLSv1"])
        lab.wait_port(TLS_PORT)
        return f"tcp port {TLS_PORT}"
    raise ValueError(service)


def record(scenarios: list[Scenario]) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for service in ("http", "smtp", "ftp", "tls"):
        todo = [s for s in scenarios if s.service == service]
        if not todo:
            continue
        with tempfile.TemporaryDirectory() as tmpdir, Lab(f"lk{service}") as lab:
            tmp = Path(tmpdir)
            bpf = start_servers(service, lab, tmp)
            for sc in todo:
                out = OUT / f"{sc.name}.pcap"
                with lab.capture(str(out), bpf=sc.bpf or bpf):
                    sc.run(lab, tmp)
                os.chmod(out, 0o644)
                size = out.stat().st_size
                if size > MAX_CAPTURE:
                    raise SystemExit(f"{out}: {size} bytes, over the {MAX_CAPTURE} byte budget")
                print(f"{out.relative_to(ROOT)} {size} bytes")


def main(argv: list[str]) -> None:
    names = set(argv)
    unknown = names - {s.name for s in ALL}
    if unknown:
        raise SystemExit(f"unknown scenarios: {', '.join(sorted(unknown))}")
    write_protected_data()
    record([s for s in ALL if not names or s.name in names])


if __name__ == "__main__":
    main(sys.argv[1:])
