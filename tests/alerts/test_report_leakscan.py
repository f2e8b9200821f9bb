"""The never-leak scanner finds markers in every encoding and file bytes anywhere, except sealed evidence."""

from __future__ import annotations

import gzip
import os

import pytest

from alerts.evidence import seal
from tests.alerts.leakscan import assert_no_leak, needles, scan_tree

MARKER = "保護すべき情報"
DOC = bytes(range(256)) * 4


@pytest.mark.parametrize("enc", ["utf-8", "cp932", "euc-jp", "utf-16-le", "utf-16-be"])
def test_marker_found_in_each_encoding(tmp_path, enc):
    (tmp_path / "eve.json").write_bytes(b'{"x":"' + ("前文" + MARKER + "後文").encode(enc) + b'"}\n')
    with pytest.raises(AssertionError) as e:
        assert_no_leak(markers=[MARKER], trees=[tmp_path])
    assert "eve.json @" in str(e.value) and f"marker[0] ({enc})" in str(e.value)
    assert MARKER not in str(e.value)  # the failure message does not leak either


def test_json_escaped_marker_and_texts_and_metrics(tmp_path):
    esc = "".join(f"\\u{ord(c):04x}" for c in MARKER)
    with pytest.raises(AssertionError, match=r"stdout @3: marker\[0\] \(json-escape\)"):
        assert_no_leak(markers=[MARKER], texts={"stdout": "ok " + esc})
    with pytest.raises(AssertionError, match=r"metrics @\d+: marker\[0\] \(utf-8\)"):
        assert_no_leak(markers=[MARKER], texts={"metrics": f'leakmon_x{{sig="{MARKER}"}} 1\n'})


def test_file_bytes_found_anywhere_including_gzip_and_sqlite_like_blobs(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "leakmon.db-wal").write_bytes(b"\0" * 100 + DOC[300:700] + b"\0" * 10)
    (tmp_path / "audit.jsonl.1.gz").write_bytes(gzip.compress(b"head" + DOC + b"tail"))
    with pytest.raises(AssertionError) as e:
        assert_no_leak(files=[DOC], trees=[tmp_path])
    msg = str(e.value)
    assert "sub/leakmon.db-wal @" in msg and "audit.jsonl.1.gz (gunzipped)" in msg


def test_only_sealed_evidence_is_skipped(tmp_path):
    (tmp_path / "flow-1.pcap.enc").write_bytes(seal(os.urandom(32), "INC-1", "flow-1.pcap", DOC))
    (tmp_path / "fake.pcap.enc").write_bytes(b"not sealed " + DOC)  # the name does not matter
    (tmp_path / "report.md").write_text("no content here")
    hits, scanned, skipped = scan_tree(tmp_path, needles([MARKER], [DOC]))
    assert skipped == ["flow-1.pcap.enc"]
    assert sorted(scanned) == ["fake.pcap.enc", "report.md"]
    assert {h.where for h in hits} == {"fake.pcap.enc"}


def test_clean_outputs_pass_and_report_coverage(tmp_path):
    (tmp_path / "first_report.ja.md").write_text("検知：■■■■■■■（マスク済み）\n")
    out = assert_no_leak(markers=[MARKER], files=[DOC], trees=[tmp_path], texts={"stderr": ""})
    assert out == {"scanned": ["first_report.ja.md", "stderr"], "skipped": []}
