"""The EVE JSON Schema: common header + one file per event type (types/<event_type>.json)."""

from __future__ import annotations

import copy
import json
from functools import lru_cache
from pathlib import Path
from typing import Any

_DIR = Path(__file__).parent


@lru_cache(maxsize=1)
def load_schema() -> dict[str, Any]:
    """The merged schema: header, then for each known event_type an if/then on its object."""
    schema: dict[str, Any] = json.loads((_DIR / "eve.schema.json").read_text(encoding="utf-8"))
    schema = copy.deepcopy(schema)
    known: list[str] = []
    conds: list[dict[str, Any]] = []
    for p in sorted((_DIR / "types").glob("*.json")):
        part = json.loads(p.read_text(encoding="utf-8"))
        et = p.stem
        known.append(et)
        conds.append({"if": {"properties": {"event_type": {"const": et}}, "required": ["event_type"]},
                      "then": part})
    schema["properties"]["event_type"] = {"enum": known}
    schema["allOf"] = conds
    return schema


def validator() -> Any:
    import jsonschema

    return jsonschema.Draft202012Validator(load_schema())


def validate_lines(lines: list[str] | str) -> list[dict[str, Any]]:
    """Parse and validate EVE lines; raises jsonschema.ValidationError on the first bad record."""
    if isinstance(lines, str):
        lines = lines.splitlines()
    v = validator()
    out = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        rec = json.loads(line)
        errors = sorted(v.iter_errors(rec), key=lambda e: list(e.path))
        if errors:
            e = errors[0]
            raise AssertionError(f"EVE line {i} ({rec.get('event_type')}): {'/'.join(map(str, e.path))}: {e.message}")
        out.append(rec)
    return out
