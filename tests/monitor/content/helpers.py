"""Shared helpers for the content decoder tests."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from monitor.config import ContentConfig
from monitor.content.extract import Member, Notice, Text, extract, walk
from monitor.stats import Stats

DOCS = Path(__file__).resolve().parents[2] / "data" / "docs"
MARKER = "保護すべき情報"


def limits(**overrides: int) -> ContentConfig:
    return dataclasses.replace(ContentConfig(), **overrides)


def run(data: bytes, name: str = "file", depth: int = 0, mime: str | None = None, **overrides: int):
    """(members, texts, notices, stats) of one extract() call."""
    stats = Stats()
    items = list(extract(data, name=name, mime=mime, depth=depth, limits=limits(**overrides), stats=stats))
    members = [i for i in items if isinstance(i, Member)]
    texts = [i for i in items if isinstance(i, Text)]
    notices = [i for i in items if isinstance(i, Notice)]
    assert len(members) + len(texts) + len(notices) == len(items)
    return members, texts, notices, stats


def run_walk(data: bytes, name: str = "file", **overrides: int):
    stats = Stats()
    return list(walk(data, name=name, limits=limits(**overrides), stats=stats)), stats


def doc(name: str) -> bytes:
    return (DOCS / name).read_bytes()


def by_where(texts: list[Text]) -> dict[str, str]:
    return {t.where: t.text for t in texts}
