"""FileObject: hashes only for complete files (whatever the write sizes), the buffer cap, the head,
listener calls in order, no hashing work for files that can never report a hash, and exactly the
configured hash set (content.hashes) computed and reported."""

from __future__ import annotations

import hashlib
import itertools
import random
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import monitor.files as files_mod
from monitor.config import default_config, load_config
from monitor.content.magic import detect_type
from monitor.errors import ConfigError
from monitor.files import (
    HASH_BLOCK,
    HASH_NAMES,
    SMALL_WRITE,
    STATE_CLOSED,
    STATE_ERROR,
    STATE_TRUNCATED,
    FileObject,
    hash_set,
)
from tests.monitor.test_replay_cli import ROOT, replay

BOTH = ("sha256", "md5")  # the set before content.hashes existed (suricata-verify's force-hash md5)


@contextmanager
def md5_hashes() -> Iterator[None]:
    """FileObjects made inside compute MD5 too, as a pipeline with ``content.hashes: [sha256, md5]``."""
    saved = FileObject.configured_hashes
    FileObject.configure_hashes(BOTH)
    try:
        yield
    finally:
        FileObject.configured_hashes = saved


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
        f = FileObject(None, 0, name="a.bin", max_buffer=max_buffer, hashes=BOTH)
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
    f = FileObject(None, 0, hashes=BOTH)
    f.write(b"A" * (HASH_BLOCK + 10))
    f.gap(100)
    assert f._hashers is None and f.buffer is None  # noqa: SLF001 - no hashing work after a gap
    f.write(b"B" * 10)
    f.close()
    assert (f.state, f.sha256, f.md5, f.size, f.missing_bytes) == (STATE_TRUNCATED, None, None, HASH_BLOCK + 120, 100)
    assert "sha256" not in f.fileinfo() and f.fileinfo()["gaps"] is True

    for state in (STATE_TRUNCATED, STATE_ERROR):
        g = FileObject(None, 0, hashes=BOTH)
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
    small = FileObject(None, 0, hashes=BOTH)
    small.write(b"hello")
    assert small._hashers is None  # noqa: SLF001
    small.close()
    assert (small.sha256, small.md5) == (hashlib.sha256(b"hello").hexdigest(), hashlib.md5(b"hello").hexdigest())  # noqa: S324

    big = FileObject(None, 0)
    big.write(b"x" * HASH_BLOCK)
    assert big._hashers is not None  # noqa: SLF001 - a full block is hashed as it arrives

    dropped = FileObject(None, 0)
    dropped.buffer = None  # given up before any byte: every write is hashed as it comes
    dropped.write(b"abc")
    dropped.close()
    assert dropped.sha256 == hashlib.sha256(b"abc").hexdigest()

    empty = FileObject(None, 0, max_buffer=0, hashes=BOTH)
    empty.close()
    assert (empty.sha256, empty.md5) == (hashlib.sha256(b"").hexdigest(), hashlib.md5(b"").hexdigest())  # noqa: S324


HASH_SETS = [c for n in range(1, 4) for c in itertools.combinations(HASH_NAMES, n) if "sha256" in c]


@pytest.mark.parametrize("names", HASH_SETS)
@pytest.mark.parametrize(("size", "max_buffer"), [(0, 1 << 20), (3000, 1 << 20), (HASH_BLOCK * 2 + 9, HASH_BLOCK)])
def test_exactly_the_configured_hashes_are_computed_and_reported(names: tuple[str, ...], size: int,
                                                                  max_buffer: int) -> None:
    data = random.Random(size).randbytes(size)
    for explicit in (True, False):  # given to the constructor, or configured once for the process
        saved = FileObject.configured_hashes
        try:
            if explicit:
                f = FileObject(None, 0, max_buffer=max_buffer, hashes=list(reversed(names)))
            else:
                FileObject.configure_hashes(names)
                f = FileObject(None, 0, max_buffer=max_buffer)
        finally:
            FileObject.configured_hashes = saved
        write_in_pieces(f, data, size)
        f.close()
        info = f.fileinfo()
        for name in HASH_NAMES:
            expected = hashlib.new(name, data).hexdigest() if name in names else None
            assert getattr(f, name) == expected
            assert info.get(name) == expected
        assert [k for k in info if k in HASH_NAMES] == [n for n in HASH_NAMES if n in names]  # fileinfo order


def test_the_default_set_is_sha256_only() -> None:
    f = FileObject(None, 0, hashes=default_config().content.hashes)
    f.write(b"abc")
    f.close()
    assert (f.sha256, f.md5, f.sha1) == (hashlib.sha256(b"abc").hexdigest(), None, None)
    assert "md5" not in f.fileinfo() and "sha1" not in f.fileinfo()
    # and so is the class default, in a fresh process (a pipeline configures it for its process)
    r = subprocess.run([sys.executable, "-c", "from monitor.files import FileObject; print(FileObject.configured_hashes)"],
                       capture_output=True, text=True, cwd=ROOT, check=True)
    assert r.stdout.strip() == "('sha256',)"


@pytest.mark.parametrize(("names", "message"), [
    (["md5"], "must include 'sha256'"), ([], "must include 'sha256'"),
    (["sha256", "sha512"], "unknown hash 'sha512'"), (["SHA256"], "unknown hash 'SHA256'"),
])
def test_a_hash_set_without_sha256_or_with_an_unknown_name_is_refused(names: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        hash_set(names)
    with pytest.raises(ValueError, match=message):
        FileObject(None, 0, hashes=tuple(names))


@pytest.mark.parametrize(("hashes", "reason"), [
    ("[md5]", "must include 'sha256'"), ("[sha256, sha512]", "unknown hash 'sha512'"),
])
def test_config_refuses_a_hash_list_without_sha256_or_with_an_unknown_name(tmp_path: Path, hashes: str,
                                                                          reason: str) -> None:
    p = tmp_path / "leakmon.yaml"
    p.write_text(f"content:\n  hashes: {hashes}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_config(p)
    assert err.value.key == "content.hashes" and reason in err.value.reason
    r = subprocess.run([sys.executable, "-m", "monitor", "check-config", "-c", str(p)], capture_output=True,
                       text=True, cwd=ROOT)
    assert r.returncode == 2 and "content.hashes" in r.stderr


def test_config_accepts_the_hash_lists_and_defaults_to_sha256(tmp_path: Path) -> None:
    p = tmp_path / "leakmon.yaml"
    p.write_text("content:\n  hashes: [md5, sha1, sha256]\n", encoding="utf-8")
    assert load_config(p).content.hashes == ["md5", "sha1", "sha256"]
    assert default_config().content.hashes == ["sha256"]


def test_default_replay_reports_sha256_and_no_md5(tmp_path: Path) -> None:
    records, _ = replay(tmp_path)
    infos = [r["fileinfo"] for r in records if r["event_type"] == "fileinfo"]
    hashed = [i for i in infos if i["state"] == STATE_CLOSED]
    assert hashed and all(len(i["sha256"]) == 64 for i in hashed)
    assert not any("md5" in i or "sha1" in i for i in infos)


# -- the buffer kept as written pieces, against a model of one growing bytearray -----------------

class Model:
    """What a FileObject reports, computed the plain way: every byte in one bytearray, hashlib
    over everything written, the head cut from the first writes."""

    def __init__(self, max_buffer: int) -> None:
        self.max_buffer = max_buffer
        self.written = bytearray()
        self.buffer: bytearray | None = bytearray()
        self.head = b""
        self.size = self.missing = 0
        self.gap = self.overflow = False

    def write(self, data: bytes) -> None:
        if not data:
            return
        if self.size < 512:
            self.head += data[: 512 - self.size]
        self.size += len(data)
        self.written += data
        if self.buffer is not None:
            if len(self.buffer) + len(data) <= self.max_buffer:
                self.buffer += data
            else:
                self.buffer = None
                self.overflow = True

    def hole(self, length: int) -> None:
        self.size += length
        self.missing += length
        self.gap = True
        self.buffer = None


OPS = st.lists(st.one_of(
    st.tuples(st.just("write"), st.integers(0, 3 * SMALL_WRITE), st.sampled_from(["bytes", "bytearray", "view"])),
    st.tuples(st.just("big"), st.integers(HASH_BLOCK - 2, HASH_BLOCK + 2), st.just("bytes")),
    st.tuples(st.just("gap"), st.integers(1, 50), st.just("")),
    st.tuples(st.just("drop"), st.just(0), st.just("")),
), max_size=40)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(OPS, st.sampled_from([0, 700, 5000, HASH_BLOCK + 100, 4 * HASH_BLOCK]),
       st.sampled_from([None, STATE_TRUNCATED, STATE_ERROR]), st.integers(0, 2**32))
def test_pieces_give_the_content_hashes_head_and_caps_of_one_bytearray(ops, max_buffer, close_as, seed) -> None:
    rng = random.Random(seed)
    lst = Listener()
    f = FileObject(None, 0, max_buffer=max_buffer, hashes=BOTH, listener=lst)
    m = Model(max_buffer)
    calls: list[tuple[str, int]] = []
    for op, n, kind in ops:
        if op in ("write", "big"):
            source = bytearray(rng.randbytes(n))
            data = bytes(source) if kind == "bytes" else source if kind == "bytearray" else memoryview(source)
            f.write(data)
            m.write(bytes(source))
            source[:] = b"\xee" * n  # the caller reuses its buffer: what was written must not change
            if n:
                calls.append(("data", n))
        elif op == "gap":
            f.gap(n)
            m.hole(n)
            calls.append(("gap", n))
        else:
            f.buffer = None
            m.buffer = None
        assert f.buffer == (None if m.buffer is None else bytes(m.buffer))
    f.close(close_as)
    calls.append(("close", m.size))
    clean = close_as is None and not m.gap
    assert f.state == (STATE_CLOSED if clean else close_as or STATE_TRUNCATED)
    assert (f.size, f.missing_bytes, f.buffer_overflow) == (m.size, m.missing, m.overflow)
    assert f.detected_type == detect_type(m.head)
    assert f.sha256 == (hashlib.sha256(m.written).hexdigest() if clean else None)
    assert f.md5 == (hashlib.md5(m.written).hexdigest() if clean else None)  # noqa: S324
    assert f.content() == (bytes(m.buffer) if clean and m.buffer is not None else None)
    assert lst.calls == calls


def test_a_file_written_in_one_piece_is_never_copied() -> None:
    data = random.Random(1).randbytes(SMALL_WRITE + 1)
    f = FileObject(None, 0)
    f.write(data)
    f.close()
    assert f.content() is data and f.sha256 == hashlib.sha256(data).hexdigest()


def test_tiny_writes_share_one_piece() -> None:
    f = FileObject(None, 0)
    for i in range(10_000):
        f.write(bytes([i % 256]))
    assert len(f._chunks or ()) == 1  # noqa: SLF001 - no object per byte written
    f.write(b"x" * SMALL_WRITE)
    f.write(b"y")
    assert len(f._chunks or ()) == 3  # noqa: SLF001
    f.close()
    expected = bytes(i % 256 for i in range(10_000)) + b"x" * SMALL_WRITE + b"y"
    assert f.content() == expected and f.sha256 == hashlib.sha256(expected).hexdigest()


def test_small_writes_past_a_hash_block_are_hashed_once_each() -> None:
    # The shared bytearray is hashed when HASH_BLOCK bytes wait; later small writes go to a new
    # one (appending to the hashed one would leave them out of the hash).
    rng = random.Random(3)
    pieces = [rng.randbytes(rng.randint(1, SMALL_WRITE - 1)) for _ in range(3 * HASH_BLOCK // 200)]
    f = FileObject(None, 0, hashes=BOTH)
    for p in pieces:
        f.write(p)
    f.close()
    expected = b"".join(pieces)
    assert len(expected) > 2 * HASH_BLOCK
    assert f.content() == expected
    assert (f.sha256, f.md5) == (hashlib.sha256(expected).hexdigest(), hashlib.md5(expected).hexdigest())  # noqa: S324


# -- the digest memo: a member written again as the very same bytes object is not hashed again

def member_of(data: bytes | bytearray, *, hashes: tuple[str, ...] = ("sha256",), close_as: str | None = None,
              parent: FileObject | None = None) -> FileObject:
    f = FileObject(None, 0, parent=parent or FileObject(None, 0), depth=1, hashes=hashes)
    f.write(data)
    f.close(close_as)
    return f


def digests_of(f: FileObject) -> tuple[str | None, str | None, str | None]:
    return f.sha256, f.md5, f.sha1


def expected_digests(data: bytes, names: tuple[str, ...]) -> tuple[str | None, str | None, str | None]:
    def hexdigest(name: str) -> str | None:
        return hashlib.new(name, data).hexdigest() if name in names else None
    return hexdigest("sha256"), hexdigest("md5"), hexdigest("sha1")


@pytest.fixture
def fresh_memo(monkeypatch: pytest.MonkeyPatch) -> files_mod._DigestMemo:  # noqa: SLF001
    memo = files_mod._DigestMemo(files_mod.DIGEST_MEMO_BYTES)  # noqa: SLF001
    monkeypatch.setattr(files_mod, "_digest_memo", memo)
    return memo


@pytest.mark.parametrize("size", [files_mod.DIGEST_MEMO_MIN, 70_000, HASH_BLOCK, HASH_BLOCK + 5, 3 * HASH_BLOCK])
@pytest.mark.parametrize("names", [("sha256",), ("sha256", "md5"), HASH_NAMES])
def test_a_member_written_again_as_the_same_object_takes_its_digests_from_the_memo(
        size, names, fresh_memo, monkeypatch) -> None:
    data = random.Random(size).randbytes(size)
    first = member_of(data, hashes=names)
    assert digests_of(first) == expected_digests(data, names)
    with monkeypatch.context() as m:
        m.setattr(FileObject, "_hash", lambda self, d: pytest.fail("hashed again"))  # the memo answers
        again = member_of(data, hashes=names)
    assert digests_of(again) == digests_of(first)
    assert again.content() is data and again.fileinfo()["sha256"] == first.sha256


def test_equal_content_in_another_object_is_hashed_and_other_hash_sets_are_not_answered(fresh_memo) -> None:
    data = random.Random(2).randbytes(50_000)
    member_of(data)
    hashed: list[int] = []
    original = FileObject._hash  # noqa: SLF001

    def counting(self: FileObject, d: object) -> None:
        hashed.append(1)
        original(self, d)

    with pytest.MonkeyPatch.context() as m:
        m.setattr(FileObject, "_hash", counting)
        copy = member_of(bytes(bytearray(data)))  # equal bytes, another object
        with_md5 = member_of(data, hashes=BOTH)  # the same object, but the memo has no MD5 for it
    assert len(hashed) == 2
    assert digests_of(copy) == expected_digests(data, ("sha256",))
    assert digests_of(with_md5) == expected_digests(data, BOTH)


@pytest.mark.parametrize("close_as", [STATE_TRUNCATED, STATE_ERROR])
def test_a_member_closed_short_or_with_a_gap_reports_no_hash_though_the_memo_knows_it(close_as, fresh_memo) -> None:
    data = random.Random(3).randbytes(20_000)
    member_of(data)
    assert member_of(data, close_as=close_as).sha256 is None
    gapped = FileObject(None, 0, parent=FileObject(None, 0), depth=1)
    gapped.write(data)
    gapped.gap(10)
    gapped.close()
    assert (gapped.state, gapped.sha256) == (STATE_TRUNCATED, None)


def test_top_level_files_short_members_and_joined_pieces_stay_out_of_the_memo(fresh_memo) -> None:
    data = random.Random(4).randbytes(30_000)
    top = FileObject(None, 0)
    top.write(data)
    top.close()
    member_of(data[: files_mod.DIGEST_MEMO_MIN - 1])
    assert fresh_memo.size == 0 and top.sha256 == hashlib.sha256(data).hexdigest()
    two = FileObject(None, 0, parent=top, depth=1)
    two.write(data)
    two.write(data)  # the content is a join of the two: a new object each time, no use keeping it
    two.close()
    assert two.sha256 == hashlib.sha256(data + data).hexdigest()


def test_the_memo_is_bounded_and_forgets_least_recently_used_first(fresh_memo, monkeypatch) -> None:
    monkeypatch.setattr(fresh_memo, "max_bytes", 100_000)
    blobs = [random.Random(i).randbytes(30_000) for i in range(6)]
    for blob in blobs:
        member_of(blob)
        assert fresh_memo.size <= 100_000
    assert [fresh_memo.get(b, ("sha256",)) is not None for b in blobs] == [False, False, False, True, True, True]
    member_of(random.Random(9).randbytes(200_000))  # larger than the whole memo: not kept
    assert fresh_memo.size == 90_000


POOL_SIZES = (0, 100, SMALL_WRITE, files_mod.DIGEST_MEMO_MIN - 1, files_mod.DIGEST_MEMO_MIN, 9_000, HASH_BLOCK + 3)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.lists(st.tuples(st.lists(st.integers(0, len(POOL_SIZES) - 1), min_size=1, max_size=3),
                          st.sampled_from([("sha256",), BOTH, HASH_NAMES]),
                          st.sampled_from([None, STATE_TRUNCATED]), st.booleans()), max_size=12))
def test_members_from_a_shared_pool_of_objects_always_report_hashlibs_digests(written) -> None:
    # Members written as objects of a small pool (so the memo is hit, missed and refilled),
    # in one or more pieces, closed cleanly or not, as members or top-level files.
    pool = [random.Random(n).randbytes(n) for n in POOL_SIZES]
    with pytest.MonkeyPatch.context() as m:
        m.setattr(files_mod, "_digest_memo", files_mod._DigestMemo(30_000))  # noqa: SLF001 - small: evictions too
        write_and_check(pool, written)


def write_and_check(pool: list[bytes], written: list[tuple[list[int], tuple[str, ...], str | None, bool]]) -> None:
    for pieces, names, close_as, is_member in written:
        parent = FileObject(None, 0) if is_member else None
        f = FileObject(None, 0, parent=parent, depth=int(is_member), hashes=names)
        for i in pieces:
            f.write(pool[i])
        f.close(close_as)
        content = b"".join(pool[i] for i in pieces)
        assert digests_of(f) == (expected_digests(content, names) if close_as is None else (None, None, None))
        assert f.content() == (content if close_as is None else None)
        assert files_mod._digest_memo.size <= 30_000  # noqa: SLF001
