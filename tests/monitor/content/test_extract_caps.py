"""Bombs, caps and malformed input: every cap stops the decoder, yields a Notice and counts."""

from __future__ import annotations

import gzip
import io
import struct
import time
import zipfile

import monitor.content.extract as extract_mod
from monitor.content.budget import RATIO_FLOOR
from tests.monitor.content.helpers import MARKER, doc, run, run_walk


def make_zip(files: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as z:
        for name, data in files.items():
            z.writestr(name, data)
    return buf.getvalue()


def test_zip_ratio_bomb_is_cut_and_marker_before_padding_still_seen():
    payload = MARKER.encode() + b"\x00" * (64 << 20)
    data = make_zip({"pad.txt": payload, "after.txt": b"next member"})
    assert len(data) < 200_000
    t0 = time.thread_time()
    members, _, notices, stats = run(data, "bomb.zip")
    assert time.thread_time() - t0 < 2
    assert members[0].truncated and members[0].data.startswith(MARKER.encode())
    assert len(members[0].data) <= max(RATIO_FLOOR, 200 * len(data)) + (64 << 10)
    assert [n.kind for n in notices] == ["bomb"]
    assert stats.get("content.cap", cap="ratio") == 1
    assert [m.name for m in members] == ["pad.txt", "after.txt"] and members[1].data == b"next member"


def test_size_cap_over_the_whole_archive():
    chunk = bytes(range(256)) * 400  # 100 KiB, incompressible enough
    data = make_zip({f"f{i}.bin": chunk for i in range(5)})
    members, _, notices, stats = run(data, "big.zip", max_decompressed=250_000)
    assert [m.truncated for m in members] == [False, False, True]
    assert sum(len(m.data) for m in members) <= 250_000 + (64 << 10)
    assert [n.kind for n in notices] == ["truncated"]
    assert stats.get("content.cap", cap="size") == 1


def test_member_cap():
    data = make_zip({f"f{i}.txt": b"x" for i in range(50)})
    members, _, notices, stats = run(data, "many.zip", max_members=7)
    assert len(members) == 7
    assert [n.kind for n in notices] == ["members"]
    assert stats.get("content.cap", cap="members") == 1


def test_overlapping_entries_bomb_reads_the_kernel_once():
    kernel = make_zip({"k": b"\x00" * (1 << 20)})
    cd_start = struct.unpack_from("<I", kernel, len(kernel) - 6)[0]
    local, central = kernel[:cd_start], kernel[cd_start:len(kernel) - 22]
    entries = 2000
    eocd = b"PK\x05\x06" + struct.pack("<HHHHIIH", 0, 0, entries, entries, len(central) * entries, cd_start, 0)
    data = local + central * entries + eocd
    t0 = time.thread_time()
    members, _, notices, stats = run(data, "overlap.zip")
    assert time.thread_time() - t0 < 1
    assert len(members) == 1 and len(members[0].data) == 1 << 20
    assert [n.kind for n in notices] == ["bomb"] and "1999" in notices[0].detail
    assert stats.get("content.bomb", kind="overlap") == 1


def test_42_zip_like_recursion_stops_at_depth():
    data = b"leaf " + MARKER.encode()
    for level in range(12):
        data = make_zip({f"level{level}.zip" if level else "leaf.txt": data} | {"pad.txt": b"p"})
    items, stats = run_walk(data, "42.zip")
    kinds = [item.kind for _, item in items if hasattr(item, "kind")]
    assert kinds == ["depth"]
    assert stats.get("content.cap", cap="depth") == 1
    assert not any(getattr(item, "text", "").startswith("leaf") for _, item in items)
    # and extract() refuses anything handed to it beyond max_depth
    _, _, notices, _ = run(data, "deep.zip", depth=9)
    assert [n.kind for n in notices] == ["depth"]


def test_gzip_bomb_and_multi_member_gzip():
    bomb = gzip.compress(b"\x00" * (32 << 20))
    members, _, notices, stats = run(bomb, "x.gz")
    assert members[0].truncated and [n.kind for n in notices] == ["bomb"]
    assert stats.get("content.cap", cap="ratio") == 1
    two = gzip.compress(b"first ") + gzip.compress(b"second")
    members, _, notices, _ = run(two, "log.txt.gz")
    assert [(m.name, m.data) for m in members] == [("log.txt", b"first second")] and notices == []


def test_text_cap_on_a_document():
    _, texts, notices, stats = run(doc("sample.docx"), "sample.docx", max_text=12)
    assert sum(len(t.text) for t in texts) <= 12
    assert [n.kind for n in notices] == ["truncated"]
    assert stats.get("content.cap", cap="text") == 1


def test_billion_laughs_in_docx_is_refused_quickly():
    lol = (b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
           + b"".join(b'<!ENTITY lol%d "%s">' % (i, (b"&lol%d;" % (i - 1) if i > 1 else b"&lol;") * 10)
                      for i in range(1, 10))
           + b']><w:document xmlns:w="w"><w:body><w:p><w:r><w:t>&lol9;</w:t></w:r></w:p></w:body></w:document>')
    data = make_zip({"[Content_Types].xml": b"<Types/>", "word/document.xml": lol})
    t0 = time.thread_time()
    _, texts, notices, stats = run(data, "lol.docx")
    assert time.thread_time() - t0 < 1
    assert texts == [] and [n.kind for n in notices] == ["malformed"]
    assert stats.get("content.malformed", format="xml") == 1


def test_corrupt_member_does_not_hide_the_others():
    data = bytearray(make_zip({"a.txt": b"A" * 5000, "b.txt": b"good"}))
    start = data.index(b"a.txt") + 5
    data[start : start + 20] = b"\xff" * 20  # break a.txt's deflate stream
    members, _, notices, stats = run(bytes(data), "c.zip")
    assert [m.data for m in members if m.name == "b.txt"] == [b"good"]
    assert "malformed" in [n.kind for n in notices]
    assert stats.get("content.malformed", format="zip") >= 1


def test_zip_without_central_directory_is_read_from_local_headers():
    data = make_zip({"a.txt": b"alpha", "b.txt": b"beta"}, zipfile.ZIP_STORED)
    cut = data[: data.index(b"PK\x01\x02")]
    members, _, _, _ = run(cut, "cut.zip")
    assert [(m.name, m.data) for m in members] == [("a.txt", b"alpha"), ("b.txt", b"beta")]


def test_time_budget(monkeypatch):
    from tests.monitor.content.pdfbuild import one_page

    monkeypatch.setattr(extract_mod, "EXTRACT_SECONDS", 0.0)
    data = one_page(b"BT " + b"(x) Tj " * 20000 + b"ET")
    _, _, notices, stats = run(data, "slow.pdf")
    assert [n.kind for n in notices] == ["truncated"]
    assert stats.get("content.cap", cap="time") == 1


def test_never_raises_on_garbage_with_known_magic():
    for head in (b"PK\x03\x04", b"%PDF-1.4", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", b"\x1f\x8b\x08\x00",
                 b"BZh91AY&SY", b"\xfd7zXZ\x00"):
        _, _, notices, _ = run(head + b"\x01" * 600, "junk")
        # the zip's flag byte 0x01 reads as "encrypted", which is what a sensor should say
        assert all(n.kind in ("malformed", "truncated", "encrypted") for n in notices)
