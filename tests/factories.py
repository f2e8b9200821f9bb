"""Factories so unit tests build flows and contexts without a capture."""

from __future__ import annotations

import ipaddress
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from monitor.applayer.base import AppParser
from monitor.config import Config
from monitor.files import FileObject
from monitor.model import PROTO_TCP, Flow
from monitor.stats import Stats

_ids = itertools.count(1)


def tflow(client: str = "10.0.0.5", server: str = "203.0.113.7", cport: int = 50000, sport: int = 80,
          proto: int = PROTO_TCP, protected_side: str | None = "client") -> Flow:
    c = ipaddress.ip_address(client)
    s = ipaddress.ip_address(server)
    return Flow(flow_id=next(_ids), proto=proto, client=c.packed, server=s.packed, cport=cport, sport=sport,
                ip_version=c.version, protected_side=protected_side)


@dataclass
class Inspected:
    data: bytes
    where: str
    direction: int
    tx_id: int | None
    file: FileObject | None
    charset: str | None


class _Collect:
    def __init__(self, ctx: RecordingContext) -> None:
        self.ctx = ctx

    def on_file_data(self, f: FileObject, data: bytes) -> None:
        pass

    def on_file_gap(self, f: FileObject, length: int) -> None:
        pass

    def on_file_close(self, f: FileObject) -> None:
        self.ctx.closed_files.append(f)


@dataclass
class RecordingContext:
    """An AppContext that records everything a parser reports."""

    flow: Flow = field(default_factory=tflow)
    config: Config = field(default_factory=Config)
    stats: Stats = field(default_factory=Stats)
    events: list[tuple[str, dict[str, Any], int | None]] = field(default_factory=list)
    txs: dict[int, dict[str, Any]] = field(default_factory=dict)
    anomalies: list[str] = field(default_factory=list)
    files: list[FileObject] = field(default_factory=list)
    closed_files: list[FileObject] = field(default_factory=list)
    inspected: list[Inspected] = field(default_factory=list)
    names: list[tuple[bytes, str, str]] = field(default_factory=list)
    expectations: list[dict[str, Any]] = field(default_factory=list)
    tls_infos: list[dict[str, Any]] = field(default_factory=list)

    def event(self, event_type: str, body: dict[str, Any], *, direction: int | None = None,
              tx_id: int | None = None, ts: float | None = None) -> None:
        self.events.append((event_type, body, tx_id))

    def tx_info(self, tx_id: int, body: dict[str, Any]) -> None:
        self.txs[tx_id] = body

    def anomaly(self, kind: str, detail: str = "", *, direction: int | None = None,
                tx_id: int | None = None) -> None:
        self.anomalies.append(kind)
        self.stats.incr("applayer.anomaly", type=kind)

    def open_file(self, direction: int, *, name: str = "", source: str, protocol: str,
                  tx_id: int | None = None, declared_type: str | None = None,
                  declared_size: int | None = None, charset: str | None = None,
                  app: dict[str, Any] | None = None, parent: FileObject | None = None) -> FileObject:
        f = FileObject(self.flow, direction, name=name, source=source, protocol=protocol, tx_id=tx_id,
                       declared_type=declared_type, declared_size=declared_size, charset=charset,
                       depth=(parent.depth + 1) if parent else 0, parent=parent,
                       max_buffer=self.config.content.max_buffer, listener=_Collect(self), app=app)
        self.files.append(f)
        return f

    def inspect(self, data: bytes, *, where: str, direction: int, tx_id: int | None = None,
                file: FileObject | None = None, charset: str | None = None) -> None:
        self.inspected.append(Inspected(bytes(data), where, direction, tx_id, file, charset))

    def set_app_proto(self, name: str) -> None:
        self.flow.app_proto = name

    def learn_name(self, addr: bytes, name: str, source: str) -> None:
        self.names.append((addr, name, source))

    def expect(self, *, server: bytes | None, server_port: int | None, client: bytes | None,
               factory: Callable[[Any], AppParser], info: dict[str, Any]) -> None:
        self.expectations.append({"server": server, "server_port": server_port, "client": client,
                                  "factory": factory, "info": info})

    def tls(self, info: dict[str, Any]) -> None:
        self.tls_infos.append(info)

    # helpers for assertions
    def event_bodies(self, event_type: str) -> list[dict[str, Any]]:
        return [b for t, b, _ in self.events if t == event_type]


_ROOT = Path(__file__).resolve().parent.parent


def sample_config(tmp_path: Path) -> Path:
    """pcaps/sample.yaml with its signature, key and output paths made to work from ``tmp_path``."""
    text = (_ROOT / "pcaps" / "sample.yaml").read_text(encoding="utf-8")
    text = text.replace("[../signatures]", f"[{_ROOT / 'signatures'}]").replace("out/", f"{tmp_path}/out/")
    text = text.replace("key_file: sample-evidence.key", f"key_file: {_ROOT / 'pcaps' / 'sample-evidence.key'}")
    tmp_path.mkdir(parents=True, exist_ok=True)
    p = tmp_path / "leakmon.yaml"
    p.write_text(text, encoding="utf-8")
    return p
