"""FileObject: hashes only for complete files (whatever the write sizes), the buffer cap, the head,
listener calls in order, and no hashing work for files that can never report a hash."""

from __future__ import annotations

import hashlib
import random

import pytest

from monitor.files import HASH_BLOCK, STATE_CLOSED, STATE_ERROR, STATE_TRUNCATED, FileObject


class Listener:
    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    def on_file_data(self, f: FileObject, data: bytes) -> None:
        self.calls.append(("data", len(data)))

    def on_file_gap(self, f: FileObject, length: int) -> None:
        self.calls.append(("gap", length))

    def on_file_close(self, f: FileObject) -> None:
        self.calls.append(("close", f.size))


def write_in_pieces(f: FileObject, data: bytes, seed: int) -> None:
    rng = random.Random(seed)
    pos = 0
    while pos < len(data):
        n = rng.choice([1, 7, 1448, 65536, HASH_BLOCK - 3, HASH_BLOCK + 5])
        f.write(data[pos : pos + n])
        pos += n


@pytest.mark.parametrize(("size", "max_buffer"), [
    (0, 1 << 20), (100, 1 << 20), (HASH_BLOCK * 3 + 17, 8 << 20),  # kept in the buffer
    (HASH_BLOCK * 3 + 17, HASH_BLOCK + 1),  # buffer given up part-way: hashed per write after it
    (5000, 0),  # nothing kept at all
])
def test_hashes_of_complete_files_match_hashlib(size: int, max_buffer: int) -> None:
    data = random.Random(size).randbytes(size)
    for seed in range(3):
        f = FileObject(None, 0, name="a.bin", max_buffer=max_buffer)
        write_in_pieces(f, data, seed)
        f.close()
        assert f.state == STATE_CLOSED and f.size == size
        assert f.sha256 == hashlib.sha256(data).hexdigest()
        assert f.md5 == hashlib.md5(data).hexdigest()  # noqa: S324
        kept = size <= max_buffer
        assert f.content() == (data if kept else None)
        assert f.buffer_overflow == (not kept and size > 0)
        assert f.fileinfo()["sha256"] == f.sha256 and f.fileinfo()["md5"] == f.md5


def test_gap_or_truncation_reports_no_hash_and_stops_hashing() -> None:
    f = FileObject(None, 0)
    f.write(b"A" * (HASH_BLOCK + 10))
    f.gap(100)
    assert f._sha256 is None and f.buffer is None  # noqa: SLF001 - no hashing work after a gap
    f.write(b"B" * 10)
    f.close()
    assert (f.state, f.sha256, f.md5, f.size, f.missing_bytes) == (STATE_TRUNCATED, None, None, HASH_BLOCK + 120, 100)
    assert "sha256" not in f.fileinfo() and f.fileinfo()["gaps"] is True

    for state in (STATE_TRUNCATED, STATE_ERROR):
        g = FileObject(None, 0)
        g.write(b"partial")
        g.close(state)
        assert (g.state, g.sha256, g.md5, g.content()) == (state, None, None, None)


def test_head_detects_type_even_when_the_buffer_is_given_up() -> None:
    f = FileObject(None, 0, max_buffer=4)
    for b in (b"%P", b"DF-1.7\n", b"x" * 1000):
        f.write(b)
    f.close()
    assert f.detected_type == "application/pdf" and f.content() is None
    assert f.sha256 == hashlib.sha256(b"%PDF-1.7\n" + b"x" * 1000).hexdigest()


def test_listener_sees_every_write_gap_and_the_close_in_order() -> None:
    lst = Listener()
    f = FileObject(None, 1, listener=lst)
    f.write(b"abc")
    f.write(b"")
    f.gap(5)
    f.write(b"de")
    f.close()
    f.write(b"late")  # after close: ignored
    f.close()
    assert lst.calls == [("data", 3), ("gap", 5), ("data", 2), ("close", 10)]


def test_dropping_the_buffer_while_open_keeps_the_hash_right() -> None:
    data = bytes(range(256)) * 100
    f = FileObject(None, 0)
    f.write(data[:1000])
    f.buffer = None  # a consumer gives the buffer up early; the bytes are still owed to the hashes
    f.write(data[1000:])
    f.close()
    assert f.sha256 == hashlib.sha256(data).hexdigest() and f.content() is None


def test_hash_state_is_made_only_when_hashing_is_due() -> None:
    # An open file that stays buffered holds no hash objects (idle keep-alive responses); the
    # hashes appear once HASH_BLOCK bytes wait, or the buffer is given up, and match hashlib.
    small = FileObject(None, 0)
    small.write(b"hello")
    assert small._sha256 is None and small._md5 is None  # noqa: SLF001
    small.close()
    assert (small.sha256, small.md5) == (hashlib.sha256(b"hello").hexdigest(), hashlib.md5(b"hello").hexdigest())  # noqa: S324

    big = FileObject(None, 0)
    big.write(b"x" * HASH_BLOCK)
    assert big._sha256 is not None  # noqa: SLF001 - a full block is hashed as it arrives

    dropped = FileObject(None, 0)
    dropped.buffer = None  # given up before any byte: every write is hashed as it comes
    dropped.write(b"abc")
    dropped.close()
    assert dropped.sha256 == hashlib.sha256(b"abc").hexdigest()

    empty = FileObject(None, 0, max_buffer=0)
    empty.close()
    assert (empty.sha256, empty.md5) == (hashlib.sha256(b"").hexdigest(), hashlib.md5(b"").hexdigest())  # noqa: S324
