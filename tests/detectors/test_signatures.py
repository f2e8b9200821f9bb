"""Signature files: the shipped set loads; bad files fail with file:line; versions follow content."""

from __future__ import annotations

from pathlib import Path

import pytest

from detectors.markers import MarkerSet
from detectors.signatures import SignatureError, load_signatures, regex_bytes

ROOT = Path(__file__).resolve().parents[2]


def test_shipped_signatures_load_and_compile():
    sigs = load_signatures([str(ROOT / "signatures")])
    assert {9100001, 9100002, 9100003, 9100004, 9100005, 9100006, 9999901} <= set(sigs.rules)
    assert sigs.rules[9999901].informational and sigs.rules[9999901].category == "canary"
    assert sigs.rules[9100004].regex == "JDA-[0-9]{4}-[0-9]{5}"
    tls = sigs.tls
    assert tls is not None and tls.min_version == "TLSv1.2" and "CRYPTREC" in tls.source
    assert tls.suites[0xC02F] == "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"
    assert 0x0035 not in tls.suites and 0x000A not in tls.suites  # RSA key transport, 3DES
    ms = MarkerSet(sigs.markers, "ahocorasick")
    assert ms.pattern_count > 100


def write(tmp: Path, text: str, name: str = "r.yaml") -> str:
    p = tmp / name
    p.write_text(text, encoding="utf-8")
    return str(p)


@pytest.mark.parametrize("text,line,reason", [
    ("markers:\n  - sid: 1\n    msg: a\n    literal: abc\n    colour: red\n", 5, "unknown key in markers"),
    ("markers:\n  - sid: x\n    msg: a\n    literal: abc\n", 2, "sid: expected a positive integer"),
    ("markers:\n  - sid: 1\n    literal: abc\n", 2, "msg: required"),
    ("markers:\n  - sid: 1\n    msg: a\n    literal: abc\n    regex: abc\n", 2, "exactly one of literal"),
    ("markers:\n  - sid: 1\n    msg: a\n    regex: '(?<=a)bc'\n", 4, "lookbehind"),
    ("markers:\n  - sid: 1\n    msg: a\n    literal: ab\n", 4, "at least 3 UTF-8 bytes"),
    ("markers:\n  - sid: 1\n    msg: a\n    literal: abc\n    priority: 9\n", 5, "priority"),
    ("markers:\n  - sid: 9000001\n    msg: a\n    literal: abc\n", 2, "reserved"),
    ("markers:\n  - {sid: 1, msg: a, literal: abc}\n  - {sid: 1, msg: b, literal: def}\n", 3, "duplicate sid 1"),
    ("fingerprints:\n  - sid: 2\n    msg: a\n    sha256: abc\n", 4, "64 hex digits"),
    ("fingerprints:\n  - sid: 2\n    msg: a\n    path: missing.pdf\n", 4, "cannot read"),
    ("markers:\n  - sid: 1\n    msg: a\n    literal: [abc\n", 5, "not valid YAML"),
    ("marker:\n  - sid: 1\n", 1, "unknown top-level key"),
    ("tls_policy:\n  min_version: TLSv2\n  cipher_suites: [{id: 1, name: x}]\n", 2, "min_version"),
])
def test_errors_name_file_and_line(tmp_path, text, line, reason):
    path = write(tmp_path, text)
    with pytest.raises(SignatureError) as exc:
        load_signatures([path])
    assert any(p.startswith(f"{path}:{line}:") and reason in p for p in exc.value.problems), exc.value.problems


def test_duplicate_sid_across_files_names_the_first(tmp_path):
    write(tmp_path, "markers:\n  - {sid: 7, msg: a, literal: abc}\n", "a.yaml")
    write(tmp_path, "markers:\n\n  - {sid: 7, msg: b, literal: xyz}\n", "b.yaml")
    with pytest.raises(SignatureError) as exc:
        load_signatures([str(tmp_path)])
    (problem,) = exc.value.problems
    assert problem.startswith(f"{tmp_path}/b.yaml:3:") and f"{tmp_path}/a.yaml:2" in problem


def test_hash_list_errors_point_into_the_list(tmp_path):
    (tmp_path / "h.txt").write_text("# header\n" + "a" * 64 + " ok.pdf\nnot-a-hash x\n")
    path = write(tmp_path, "fingerprint_lists:\n  - {sid: 5, msg: m, file: h.txt}\n")
    with pytest.raises(SignatureError) as exc:
        load_signatures([path])
    assert exc.value.problems[0].startswith(f"{tmp_path}/h.txt:3:")


def test_version_is_a_hash_of_the_loaded_content(tmp_path):
    p = write(tmp_path, "markers:\n  - {sid: 1, msg: a, literal: abcd}\n")
    v1 = load_signatures([p]).version
    assert load_signatures([p]).version == v1
    write(tmp_path, "markers:\n  - {sid: 1, msg: a, literal: abce}\n")
    assert load_signatures([p]).version != v1


def test_regex_text_becomes_a_utf8_byte_regex():
    assert regex_bytes("社外秘-[0-9]{2}") == rb"(?:\xe7\xa4\xbe)(?:\xe5\xa4\x96)(?:\xe7\xa7\x98)-[0-9]{2}"
    with pytest.raises(ValueError, match="inside"):
        regex_bytes("[社外]")
