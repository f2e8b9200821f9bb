"""The contract between the pipeline and application-layer parsers.

A parser is sans-IO: the pipeline calls ``feed(direction, data, ts)`` with reassembled,
in-order bytes, ``gap(direction, length)`` when bytes were lost, and ``close(ts)`` when the
flow ends. The parser reports everything through its :class:`AppContext`; it never raises
on bad input (malformed input -> ``ctx.anomaly(...)`` and a counter; the raw bytes are
matched anyway by the pipeline's raw-stream scan).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from monitor.config import Config
from monitor.files import FileObject
from monitor.model import Flow
from monitor.stats import Stats


class AppParser(Protocol):
    name: str

    def feed(self, direction: int, data: bytes, ts: float) -> None: ...

    def gap(self, direction: int, length: int, ts: float) -> None: ...

    def close(self, ts: float) -> None: ...


class AppContext(Protocol):
    """What a parser may do. Implemented by the pipeline and by ``tests/factories.RecordingContext``."""

    flow: Flow
    config: Config
    stats: Stats

    def event(self, event_type: str, body: dict[str, Any], *, direction: int | None = None,
              tx_id: int | None = None, ts: float | None = None) -> None:
        """Write an app-layer EVE record (``event("http", {"http": {...}}, tx_id=0)``)."""

    def tx_info(self, tx_id: int, body: dict[str, Any]) -> None:
        """Record what is known so far of a transaction (e.g. ``{"http": {...}}`` once request
        headers are parsed), so an alert raised mid-transaction carries it."""

    def anomaly(self, kind: str, detail: str = "", *, direction: int | None = None,
                tx_id: int | None = None) -> None:
        """Malformed/suspicious input: an ``anomaly`` event (type ``applayer``) and counter
        ``applayer.anomaly{type=kind}``. ``kind`` is a fixed identifier such as
        ``http.invalid_chunk_size``; ``detail`` never carries payload bytes."""

    def open_file(self, direction: int, *, name: str = "", source: str, protocol: str,
                  tx_id: int | None = None, declared_type: str | None = None,
                  declared_size: int | None = None, charset: str | None = None,
                  app: dict[str, Any] | None = None, parent: FileObject | None = None) -> FileObject:
        """A new file object wired to detection; write bytes into it, then close it."""

    def inspect(self, data: bytes, *, where: str, direction: int, tx_id: int | None = None,
                file: FileObject | None = None, charset: str | None = None) -> None:
        """A decoded buffer (form field, JSON strings, mail text, header value) for detection."""

    def set_app_proto(self, name: str) -> None:
        """Name the flow's protocol (``http``, ``smtp``, ``ftp``, ``ftp-data``, ``tls``, ``dns``)."""

    def learn_name(self, addr: bytes, name: str, source: str) -> None:
        """Host name of an address (DNS answer, SNI, HTTP Host, SMTP HELO) for policy and reports."""

    def expect(self, *, server: bytes | None, server_port: int | None, client: bytes | None,
               factory: Callable[[AppContext], AppParser], info: dict[str, Any]) -> None:
        """A future flow (FTP data channel) to be parsed by ``factory``; ``None`` = any."""

    def tls(self, info: dict[str, Any]) -> None:
        """TLS handshake facts (version, cipher, sni, ...) for the weak-crypto policy."""
