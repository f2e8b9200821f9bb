"""On-disk cache of compiled Hyperscan databases: start-up without the compile.

Compiling the shipped signatures' two databases (block and stream mode) takes about 0.15 s of
CPU per process, paid again by every ``--workers`` worker and every hot reload;
loading a serialized database takes about 0.1 ms. Entries are keyed by a SHA-256 of everything
that determines the compiled bytes: the exact expressions, ids and flags in order, the
database mode, and the Hyperscan library's version and target features as this host reports
them (a database compiled elsewhere is never looked up) and the Python binding's version.

A compiled database holds the protected markers, so it gets the signature files' protection:
the directory is created 0700, each file 0600 (``mkstemp``) and replaced atomically; an entry
is only read from a directory and file owned by this user that no one else can write (or, for
the file, read). Nothing about an entry's content is logged.

Every failure falls back to compiling: a missing entry (``miss``), one whose header, checksum
or key does not match or that Hyperscan refuses (``invalid``: the entry is recompiled and
rewritten), or a directory that cannot be used (``unusable``). Outcomes are counted per result
(:attr:`DatabaseCache.outcomes`); the engine folds them into ``signatures.db_cache``.

Small databases are not written (:data:`MIN_COMPILE_SECONDS`): a compile that cheap is not
worth a file, and test suites that compile thousands of tiny pattern sets leave none behind.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

log = logging.getLogger(__name__)

ENV_DIR = "LEAKMON_CACHE_DIR"  # a directory, or "off" (or empty) to disable the cache
MAGIC = b"LEAKMON-HSDB-1\n"
SUFFIX = ".hsdb"
MIN_COMPILE_SECONDS = 0.005  # CPU seconds; cheaper compiles (a few plain literals: ~0.2 ms) are not stored
KEEP_ENTRIES = 16  # newest entries kept per directory (old rule set versions are pruned)
_HEADER = len(MAGIC) + 32 + 32  # magic, key, SHA-256 of the serialized database


def default_dir() -> str | None:
    """``$LEAKMON_CACHE_DIR`` (``off``/empty: no cache), else ``$XDG_CACHE_HOME/leakmon``
    (``~/.cache/leakmon``)."""
    env = os.environ.get(ENV_DIR)
    if env is not None:
        return None if env.strip() in ("", "off") else env
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "leakmon")


def database_key(exprs: Sequence[bytes], ids: Sequence[int], flags: Sequence[int], mode: int,
                 engine_version: bytes) -> bytes:
    """SHA-256 of the exact compile input plus the engine that would compile it."""
    h = hashlib.sha256()
    h.update(MAGIC)
    h.update(engine_version)
    h.update(b"\0mode=%d\0n=%d\0" % (mode, len(exprs)))
    for expr, pid, flag in zip(exprs, ids, flags, strict=True):
        h.update(b"%d:%d:%d:" % (pid, flag, len(expr)))  # length-prefixed: no two lists collide
        h.update(expr)
    return h.digest()


class DatabaseCache:
    """One cache directory. ``load_or_compile`` never raises for a cache problem."""

    def __init__(self, directory: str | None) -> None:
        self.directory = directory
        self.outcomes: Counter[str] = Counter()

    @classmethod
    def from_environment(cls) -> DatabaseCache:
        return cls(default_dir())

    def load_or_compile(self, key: bytes, compile_db: Callable[[], Any], load_db: Callable[[bytes], Any],
                        dump_db: Callable[[Any], bytes], probe_db: Callable[[Any], None]) -> Any:
        """The cached database for ``key``, or ``compile_db()`` (stored when worth it).

        ``load_db`` deserializes, ``probe_db`` runs a trivial scan (raises if this host cannot
        use the database); compile errors propagate (they are pattern errors, not cache ones).
        """
        if self.directory is None:
            return compile_db()
        path = os.path.join(self.directory, key.hex() + SUFFIX)
        blob, result = self._read(path, key)
        if blob is not None:
            try:
                db = load_db(blob)
                probe_db(db)
            except Exception as exc:  # noqa: BLE001 - any refusal means: compile instead
                log.debug("database cache entry %s unusable: %s", os.path.basename(path), type(exc).__name__)
                result = "invalid"
            else:
                self.outcomes["hit"] += 1
                return db
        self.outcomes[result] += 1
        t0 = time.process_time()
        db = compile_db()
        if result != "unusable" and time.process_time() - t0 >= MIN_COMPILE_SECONDS:
            self._write(path, key, dump_db(db))
        return db

    # ------------------------------------------------------------------ files

    def _read(self, path: str, key: bytes) -> tuple[bytes | None, str]:
        """(serialized database, "") or (None, why: miss / invalid / unusable)."""
        assert self.directory is not None
        try:
            if not _private_dir(self.directory, create=False):
                return None, "unusable"
        except FileNotFoundError:
            return None, "miss"
        except OSError:
            return None, "unusable"
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except FileNotFoundError:
            return None, "miss"
        except OSError:
            return None, "invalid"  # e.g. a symlink planted in place of an entry
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
                return None, "invalid"
            with os.fdopen(fd, "rb", closefd=False) as fh:
                data = fh.read()
        except OSError:
            return None, "invalid"
        finally:
            os.close(fd)
        if len(data) < _HEADER or not data.startswith(MAGIC):
            return None, "invalid"
        m = len(MAGIC)
        blob = data[_HEADER:]
        if data[m:m + 32] != key or data[m + 32:_HEADER] != hashlib.sha256(blob).digest():
            return None, "invalid"
        return blob, ""

    def _write(self, path: str, key: bytes, blob: bytes) -> None:
        directory = os.path.dirname(path)
        tmp = None
        try:
            if not _private_dir(directory, create=True):
                return
            fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=SUFFIX, dir=directory)  # mode 0600
            with os.fdopen(fd, "wb") as fh:
                fh.write(MAGIC + key + hashlib.sha256(blob).digest() + blob)
            os.replace(tmp, path)
            tmp = None
            self._prune(directory)
        except OSError as exc:
            log.debug("database cache not written: %s", type(exc).__name__)
        finally:
            if tmp is not None:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass

    @staticmethod
    def _prune(directory: str) -> None:
        """Keep the newest :data:`KEEP_ENTRIES` entries (rule set versions come and go)."""
        entries = []
        for name in os.listdir(directory):
            if name.endswith(SUFFIX) and not name.startswith("."):
                try:
                    entries.append((os.stat(os.path.join(directory, name)).st_mtime, name))
                except OSError:
                    continue
        entries.sort(reverse=True)
        for _mtime, name in entries[KEEP_ENTRIES:]:
            try:
                os.unlink(os.path.join(directory, name))
            except OSError:
                pass


def _private_dir(directory: str, *, create: bool) -> bool:
    """Is ``directory`` ours, and writable by no one else (created 0700 when asked)? One that
    others can write to could hold a planted database that blinds the sensor (entries are
    0600 files, so a readable directory does not expose them)."""
    if create:
        os.makedirs(directory, mode=0o700, exist_ok=True)
    st = os.stat(directory)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
        return False
    return not st.st_mode & 0o022
