#!/usr/bin/env python3
"""Record real curl uploads to a small Python HTTP server in a network-namespace lab.

    python3 pcaps/make_http.py            # writes pcaps/http-uploads.pcap (needs root)

The server (this file with ``--serve PORT``) is an HTTP/1.1 keep-alive upload sink: it
reads Content-Length and chunked request bodies (and answers ``Expect: 100-continue``)
and replies with the body's size and SHA-256 as JSON. The client is curl, one process per
scenario; every scenario's payload is fixed so the capture's decoded files have known hashes
(asserted in tests/monitor/applayer/test_http_captures.py).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import sys
import tempfile
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

PORT = 8080
JSON_TEXT = "見積書 第3版 機密"  # sent as \\uXXXX escapes by the JSON scenario
FORM_FIELDS = [("comment", "見積書 機密 取扱注意"), ("project", "X-17 A&B")]
JP_NAME = "見積書.docx"
RFC5987_NAME = "設計図.txt"


def docx_bytes() -> bytes:
    """A tiny but well-formed OOXML document (zip with word/document.xml), fixed timestamps."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, text in (
            ("[Content_Types].xml", '<?xml version="1.0"?><Types xmlns="http://schemas.openxmlformats.org/'
             'package/2006/content-types"><Override PartName="/word/document.xml" ContentType="application/'
             'vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"/></Types>'),
            ("word/document.xml", '<?xml version="1.0"?><w:document xmlns:w="http://schemas.openxmlformats.org/'
             'wordprocessingml/2006/main"><w:body><w:p><w:r><w:t>見積書 LAB-MARKER-DOCX</w:t></w:r></w:p>'
             '</w:body></w:document>'),
        ):
            info = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, text.encode("utf-8"))
    return buf.getvalue()


def payloads() -> dict[str, bytes]:
    """Every body the scenarios send (the tests recompute these and compare hashes)."""
    text = ("LAB-MARKER-CHUNKED 取扱注意 " * 200).encode("utf-8")
    return {
        "docx": docx_bytes(),
        "chunked": text,
        "plain_gz_source": ("LAB-MARKER-GZIP 機密 " * 300).encode("utf-8"),
        "continue": ("LAB-MARKER-CONTINUE " * 200).encode("ascii"),
        "rfc5987": "設計図 LAB-MARKER-RFC5987\n".encode(),
    }


def gzip_fixed(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


# ---------------------------------------------------------------- server


class UploadHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "lab-upload/1"
    sys_version = ""

    def log_message(self, *args: object) -> None:
        pass

    def _body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            out = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length", "0")))

    def _reply(self, obj: dict[str, object]) -> None:
        data = json.dumps(obj, sort_keys=True).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:  # noqa: N802 - http.server naming
        body = self._body()
        self._reply({"path": self.path, "size": len(body), "sha256": hashlib.sha256(body).hexdigest()})

    do_PUT = do_POST  # noqa: N815

    def do_GET(self) -> None:  # noqa: N802
        data = f"page {self.path}\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def serve(port: int) -> None:
    ThreadingHTTPServer(("0.0.0.0", port), UploadHandler).serve_forever()


# ---------------------------------------------------------------- scenarios


def record(out: Path) -> None:
    from pcaps.lab import Lab

    p = payloads()
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        (t / JP_NAME).write_bytes(p["docx"])
        (t / "chunked.txt").write_bytes(p["chunked"])
        (t / "body.gz").write_bytes(gzip_fixed(p["plain_gz_source"]))
        (t / "continue.txt").write_bytes(p["continue"])
        boundary = "lab5987boundary"
        mp = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"doc\"; "
              f"filename*=UTF-8''%E8%A8%AD%E8%A8%88%E5%9B%B3.txt\r\nContent-Type: text/plain\r\n\r\n").encode()
        mp += p["rfc5987"] + f"\r\n--{boundary}--\r\n".encode()
        (t / "rfc5987.body").write_bytes(mp)
        json_body = json.dumps({"title": JSON_TEXT, "n": 3}, ensure_ascii=True).encode()
        (t / "api.json").write_bytes(json_body)
        os.chmod(tmp, 0o755)

        url = f"http://10.77.0.2:{PORT}"
        curl = ["curl", "-s", "-o", "/dev/null", "--http1.1"]
        with Lab("lmhttp") as lab:
            lab.server([sys.executable, str(HERE / "make_http.py"), "--serve", str(PORT)])
            lab.wait_port(PORT)
            with lab.capture(str(out)):
                form = []
                for k, v in FORM_FIELDS:
                    form += ["--data-urlencode", f"{k}={v}"]
                lab.client(curl + form + [f"{url}/form"])
                lab.client(curl + ["-F", f"file=@{t / JP_NAME};type=application/vnd.openxmlformats-"
                                   "officedocument.wordprocessingml.document", "-F", "note=draft",
                                   f"{url}/upload"])
                lab.client(curl + ["-H", f"Content-Type: multipart/form-data; boundary={boundary}",
                                   "--data-binary", f"@{t / 'rfc5987.body'}", f"{url}/upload5987"])
                lab.client(curl + ["-H", "Transfer-Encoding: chunked", "-H", "Content-Type: text/plain",
                                   "--data-binary", f"@{t / 'chunked.txt'}", f"{url}/chunked"])
                lab.client(curl + ["-H", "Content-Encoding: gzip", "-H", "Content-Type: text/plain",
                                   "--data-binary", f"@{t / 'body.gz'}", f"{url}/gzip"])
                lab.client(curl + ["-H", "Content-Type: application/json",
                                   "--data-binary", f"@{t / 'api.json'}", f"{url}/api"])
                lab.client(curl + ["-H", "Expect: 100-continue", "--expect100-timeout", "5",
                                   "--data-binary", f"@{t / 'continue.txt'}", f"{url}/continue"])
                # keep-alive: three GETs on one connection
                lab.client(["curl", "-s", "--http1.1", "-o", "/dev/null", "-o", "/dev/null", "-o", "/dev/null",
                            f"{url}/ka/1", f"{url}/ka/2", f"{url}/ka/3"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--serve", type=int, help="run the upload server on this port (inside the lab)")
    ap.add_argument("--out", default=str(HERE / "http-uploads.pcap"))
    args = ap.parse_args()
    if args.serve:
        serve(args.serve)
        return
    record(Path(args.out))
    print(f"wrote {args.out} ({Path(args.out).stat().st_size} bytes)")


if __name__ == "__main__":
    main()
