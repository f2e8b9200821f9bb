"""What the application-layer micro-benchmarks (bench/http_bench.py, bench/mail_bench.py) share:
a context doing the pipeline's work minus detection, a counting stand-in for FileObject, text
vocabularies and the CPU-time harness."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from monitor.config import Config
from monitor.files import FileObject
from monitor.model import TO_SERVER
from monitor.stats import Stats
from tests.factories import tflow

EN = ("the quarterly report lists the supplier parts and delivery dates for the program office "
      "see attached drawings rev C and the test plan ").split()
JA = "調達 情報 セキュリティ 基準 に 基づき 設計 図面 を 送付 します 試験 計画 の 改訂 版 です".split()

class DropListener:
    def on_file_data(self, f: FileObject, data: bytes) -> None:
        pass

    def on_file_gap(self, f: FileObject, length: int) -> None:
        pass

    def on_file_close(self, f: FileObject) -> None:
        pass


class CountingFile:
    """Stands in for FileObject where only the parser's own cost is measured (no hashes, no buffer)."""

    def __init__(self) -> None:
        self.size = 0
        self.sha256 = "-"
        self.state = "OPEN"
        self.depth = 0

    def write(self, data: bytes) -> None:
        self.size += len(data)

    def gap(self, length: int) -> None:
        self.size += length

    def close(self, state: str | None = None) -> None:
        self.state = state or "CLOSED"


class BenchContext:
    """An AppContext doing the pipeline's work minus detection."""

    def __init__(self, real_files: bool = True, *, server_port: int = 80) -> None:
        self.real_files = real_files
        self.flow = tflow(sport=server_port)
        self.config = Config()
        self.stats = Stats()
        self.files: list[Any] = []
        self.inspected = 0
        self.events = 0
        self.listener = DropListener()

    def event(self, event_type: str, body: dict[str, Any], **_: Any) -> None:
        self.events += 1

    def tx_info(self, tx_id: int, body: dict[str, Any]) -> None:
        pass

    def anomaly(self, kind: str, detail: str = "", **_: Any) -> None:
        self.stats.incr("applayer.anomaly", type=kind)

    def open_file(self, direction: int, **kw: Any) -> Any:
        if not self.real_files:
            stub = CountingFile()
            self.files.append(stub)
            return stub
        kw.pop("declared_size", None)
        parent = kw.get("parent")
        f = FileObject(self.flow, direction, max_buffer=self.config.content.max_buffer,
                       listener=self.listener, depth=(parent.depth + 1) if parent else 0, **kw)
        self.files.append(f)
        return f

    def inspect(self, data: bytes, **_: Any) -> None:
        self.inspected += len(data)

    def set_app_proto(self, name: str) -> None:
        self.flow.app_proto = name

    def learn_name(self, addr: bytes, name: str, source: str) -> None:
        pass

    def expect(self, **_: Any) -> None:
        pass

    def tls(self, info: dict[str, Any]) -> None:
        pass


def run_file(chunks: list[bytes]) -> str | None:
    f = FileObject(None, TO_SERVER, listener=DropListener())
    for c in chunks:
        f.write(c)
    f.close()
    return f.sha256


def best(fn: Callable[[], object], repeat: int,
         around: Callable[[], AbstractContextManager[object]] = nullcontext) -> float:
    """Least CPU time (process_time) of ``repeat`` calls, each after a full collection and each
    inside ``around()`` (e.g. the sensor's collector settings), whose set-up is not timed."""
    times = []
    for _ in range(repeat):
        gc.collect()
        with around():
            t0 = time.process_time()
            fn()
            times.append(time.process_time() - t0)
    return min(times)


def chunks_of(data: bytes | bytearray, n: int) -> list[bytes]:
    return [bytes(data[i : i + n]) for i in range(0, len(data), n)]
