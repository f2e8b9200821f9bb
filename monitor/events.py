"""The one event record every stage produces and every sink consumes.

``body`` holds the type-specific objects keyed as in EVE (``{"http": {...}}``,
``{"anomaly": {...}}``, ``{"alert": {...}, "leakmon": {...}, "fileinfo": {...}}``). The EVE
header (timestamp, flow_id, community_id, addresses, ...) is built in exactly one place:
:func:`alerts.eve.eve_record`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from monitor.model import Flow


@dataclass(slots=True)
class Event:
    """One event on the bus: becomes an EVE record (alert, fileinfo, http, stats, ...)."""

    event_type: str
    ts: float
    body: dict[str, Any] = field(default_factory=dict)
    flow: Flow | None = None
    direction: int | None = None  # TO_SERVER/TO_CLIENT: orients src/dest in the header
    pcap_cnt: int | None = None
    tx_id: int | None = None
    iface: str = ""
    # Monotonic time the triggering packet entered the pipeline (latency histogram), if known.
    ingress: float | None = None
    # In-process references for sinks (file bytes, flow recorder); never serialised to EVE.
    extra: dict[str, Any] = field(default_factory=dict)


Sink = Callable[[Event], None]


class EventBus:
    """Fan-out of events to sinks (EVE writer, incidents, metrics, evidence, notifications).

    A sink that raises is counted and contained: one broken sink never stops the others or
    the packet path.
    """

    def __init__(self, stats: Any | None = None) -> None:
        self._sinks: list[tuple[str, Sink]] = []
        self.stats = stats

    def subscribe(self, name: str, sink: Sink, *, first: bool = False) -> None:
        """Add a sink after the others, or before them (``first``: an EVE sink, whose records set
        the flow's community_id that later sinks copy)."""
        if first:
            self._sinks.insert(0, (name, sink))
        else:
            self._sinks.append((name, sink))

    def publish(self, event: Event) -> None:
        for name, sink in self._sinks:
            try:
                sink(event)
            except Exception:  # noqa: BLE001 - containment is the point
                if self.stats is not None:
                    self.stats.incr("output.sink_error", sink=name)
