"""Signature files (``signatures/*.yaml``): load, validate with file:line errors, version.

The fixed contract (see docs/signatures.md) is ``markers:`` (sid, msg, priority, literal or
regex, nocase) and ``fingerprints:`` (sid, msg, sha256 or path). Extensions: ``category``,
``rev``, ``metadata``, ``informational`` on every rule; ``fingerprint_lists:`` (hash list
files); ``documents:`` (partial-document indexes made by ``leakmon fingerprint index``);
``tls_policy:`` (the CRYPTREC cipher-suite list used by the weak-crypto policy).

A set is loaded completely or not at all: any error raises :class:`SignatureError` listing
every problem found as ``file:line: reason``, and the caller keeps its previous set.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import yaml

from detectors.filehash import HashListError, HashSet, is_sha256, sha256_file
from detectors.matcher import Pattern, PatternError, RegexInfo
from monitor.errors import ConfigError

# Signature ids leakmon itself uses for policy alerts; rule files may not use them.
SID_PLAINTEXT = 9000001
SID_TLS_VERSION = 9000002
SID_TLS_CIPHER = 9000003
RESERVED_SIDS = range(9000001, 9000100)

CATEGORY_LEAK = "protected-data-leak"
CATEGORY_FINGERPRINT = "fingerprint-match"
CATEGORY_PARTIAL = "partial-document-match"
CATEGORY_PLAINTEXT = "plaintext-transmission"
CATEGORY_WEAK_CRYPTO = "weak-crypto"
CATEGORY_CANARY = "canary"

MAX_ERRORS = 25
_TLS_VERSIONS = ("SSLv2", "SSLv3", "TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3")


class SignatureError(ConfigError):
    """One or more problems in a signature set; ``problems`` lists ``file:line: reason``."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        super().__init__("signatures", "", "; ".join(problems[:3]) + more)


@dataclass(frozen=True)
class Rule:
    """One signature: a marker, a file fingerprint, a hash list or a protected document."""

    sid: int
    msg: str
    kind: str  # marker | fingerprint | fingerprint_list | document
    priority: int
    category: str
    rev: int
    metadata: dict[str, list[str]]
    file: str
    line: int
    informational: bool = False
    literal: str | None = None
    regex: str | None = None
    nocase: bool = False
    sha256: str | None = None
    source_path: str | None = None  # fingerprint path / hash list / document index
    min_chars: int | None = None  # documents: overrides detection.partial_min_chars


@dataclass(frozen=True)
class TlsPolicy:
    """The approved TLS versions and cipher suites (CRYPTREC list)."""

    source: str
    min_version: str
    suites: dict[int, str]  # IANA id -> name
    file: str = ""


@dataclass
class SignatureSet:
    """Every rule loaded from the signature files, by kind, with the set's version."""

    rules: dict[int, Rule] = field(default_factory=dict)
    markers: list[Rule] = field(default_factory=list)
    hashes: HashSet = field(default_factory=HashSet)
    documents: list[tuple[Rule, Any]] = field(default_factory=list)  # (rule, partial.PartialIndex)
    tls: TlsPolicy | None = None
    files: list[str] = field(default_factory=list)
    version: str = "empty"

    def describe(self) -> dict[str, int]:
        return {"markers": len(self.markers), "hashes": len(self.hashes), "documents": len(self.documents),
                "rules": len(self.rules)}


# ---------------------------------------------------------------- YAML with line numbers


class _Map(dict):  # type: ignore[type-arg]
    """A mapping that remembers the line of itself and of each key."""

    line = 0
    key_lines: dict[Any, int]


class _Loader(yaml.CSafeLoader if hasattr(yaml, "CSafeLoader") else yaml.SafeLoader):  # type: ignore[misc]
    pass


def _construct_map(loader: Any, node: yaml.MappingNode) -> Any:
    m = _Map()
    m.line = node.start_mark.line + 1
    m.key_lines = {}
    yield m
    loader.flatten_mapping(node)
    for k_node, v_node in node.value:
        key = loader.construct_object(k_node, deep=True)
        if key in m:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", k_node.start_mark)
        m[key] = loader.construct_object(v_node, deep=True)
        m.key_lines[key] = k_node.start_mark.line + 1


_Loader.add_constructor("tag:yaml.org,2002:map", _construct_map)


# ---------------------------------------------------------------- loading


def signature_files(paths: Iterable[str]) -> list[str]:
    """Files named by ``paths``: files as given, directories as their *.yaml/*.yml, sorted."""
    out: list[str] = []
    for p in paths:
        if os.path.isdir(p):
            out.extend(sorted(os.path.join(p, n) for n in os.listdir(p) if n.endswith((".yaml", ".yml"))))
        else:
            out.append(p)
    return out


class _Problems:
    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, file: str, line: int, reason: str) -> None:
        if len(self.items) < MAX_ERRORS:
            self.items.append(f"{file}:{line}: {reason}")


def load_signatures(paths: Iterable[str], *, extra_rules: Iterable[Rule] = ()) -> SignatureSet:
    """Load and validate every signature file; raises SignatureError with all problems found."""
    files = signature_files(paths)
    sigs = SignatureSet(files=files)
    problems = _Problems()
    seen: dict[int, str] = {}
    digest = hashlib.sha256()
    for path in files:
        try:
            with open(path, "rb") as fh:
                raw = fh.read()
        except OSError as exc:
            problems.add(path, 0, f"cannot read: {exc.strerror}")
            continue
        digest.update(path.encode() + b"\0" + raw + b"\0")
        try:
            doc = yaml.load(raw.decode("utf-8"), Loader=_Loader)  # noqa: S506 - a safe loader
        except UnicodeDecodeError:
            problems.add(path, 0, "not UTF-8")
            continue
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            problems.add(path, mark.line + 1 if mark else 0, f"not valid YAML: {getattr(exc, 'problem', exc)}")
            continue
        if doc is None:
            continue
        if not isinstance(doc, _Map):
            problems.add(path, 1, "expected a mapping with markers:/fingerprints:/... at the top level")
            continue
        _load_doc(doc, path, sigs, problems, seen, digest)
    for rule in extra_rules:
        if rule.sid in sigs.rules:
            continue  # a file may define it explicitly
        sigs.rules[rule.sid] = rule
        if rule.kind == "marker":
            sigs.markers.append(rule)
        digest.update(json.dumps(_rule_key(rule), sort_keys=True, ensure_ascii=False).encode())
    if problems.items:
        raise SignatureError(problems.items)
    sigs.version = digest.hexdigest()[:16] if (files or sigs.rules) else "empty"
    return sigs


_TOP_KEYS = ("markers", "fingerprints", "fingerprint_lists", "documents", "tls_policy")
_COMMON = {"sid", "msg", "priority", "category", "rev", "metadata", "informational"}
_KIND_KEYS = {
    "markers": _COMMON | {"literal", "regex", "nocase"},
    "fingerprints": _COMMON | {"sha256", "path"},
    "fingerprint_lists": _COMMON | {"file"},
    "documents": _COMMON | {"index", "min_chars"},
}
_DEFAULT_CATEGORY = {"markers": CATEGORY_LEAK, "fingerprints": CATEGORY_FINGERPRINT,
                     "fingerprint_lists": CATEGORY_FINGERPRINT, "documents": CATEGORY_PARTIAL}
_KIND_NAME = {"markers": "marker", "fingerprints": "fingerprint", "fingerprint_lists": "fingerprint_list",
              "documents": "document"}


def _load_doc(doc: _Map, path: str, sigs: SignatureSet, problems: _Problems, seen: dict[int, str],
              digest: Any) -> None:
    base = os.path.dirname(os.path.abspath(path))
    for key, value in doc.items():
        line = doc.key_lines.get(key, doc.line)
        if key not in _TOP_KEYS:
            problems.add(path, line, f"unknown top-level key {key!r} (known: {', '.join(_TOP_KEYS)})")
            continue
        if key == "tls_policy":
            _load_tls(value, path, line, sigs, problems)
            continue
        if value is None:
            continue
        if not isinstance(value, list):
            problems.add(path, line, f"{key}: expected a list of rules")
            continue
        for item in value:
            if not isinstance(item, _Map):
                problems.add(path, line, f"{key}: each entry must be a mapping")
                continue
            rule = _rule(key, item, path, base, problems, sigs, digest)
            if rule is None:
                continue
            where = f"{path}:{item.line}"
            if rule.sid in seen:
                problems.add(path, item.line, f"duplicate sid {rule.sid} (first defined at {seen[rule.sid]})")
                continue
            seen[rule.sid] = where
            sigs.rules[rule.sid] = rule


def _rule(section: str, item: _Map, path: str, base: str, problems: _Problems, sigs: SignatureSet,
          digest: Any) -> Rule | None:
    n0 = len(problems.items)

    def bad(key: str, reason: str) -> None:
        problems.add(path, item.key_lines.get(key, item.line), f"{key}: {reason}" if key else reason)

    for k in item:
        if k not in _KIND_KEYS[section]:
            bad(k, f"unknown key in {section} (known: {', '.join(sorted(_KIND_KEYS[section]))})")
    sid = item.get("sid")
    if isinstance(sid, bool) or not isinstance(sid, int) or not 1 <= sid <= 0xFFFFFFFF:
        bad("sid", f"expected a positive integer, got {sid!r}")
        sid = 0
    elif sid in RESERVED_SIDS:
        bad("sid", f"{sid} is reserved for leakmon's policy alerts ({RESERVED_SIDS.start}-{RESERVED_SIDS.stop - 1})")
    msg = item.get("msg")
    if not isinstance(msg, str) or not msg.strip():
        bad("msg", "required: a non-empty string")
        msg = ""
    priority = item.get("priority", 2 if section == "markers" else 1)
    if isinstance(priority, bool) or not isinstance(priority, int) or not 1 <= priority <= 4:
        bad("priority", f"expected 1 (highest) .. 4, got {priority!r}")
        priority = 2
    rev = item.get("rev", 1)
    if isinstance(rev, bool) or not isinstance(rev, int) or rev < 1:
        bad("rev", f"expected a positive integer, got {rev!r}")
        rev = 1
    informational = item.get("informational", False)
    if not isinstance(informational, bool):
        bad("informational", "expected true or false")
        informational = False
    category = item.get("category", CATEGORY_CANARY if informational else _DEFAULT_CATEGORY[section])
    if not isinstance(category, str) or not category or not all(c.isalnum() or c in "-_" for c in category):
        bad("category", f"expected a short identifier such as 'protected-data-leak', got {category!r}")
        category = _DEFAULT_CATEGORY[section]
    metadata = _metadata(item.get("metadata", {}), bad)
    fields: dict[str, Any] = {}

    if section == "markers":
        literal, regex = item.get("literal"), item.get("regex")
        nocase = item.get("nocase", False)
        if not isinstance(nocase, bool):
            bad("nocase", "expected true or false")
            nocase = False
        if (literal is None) == (regex is None):
            bad("", "a marker needs exactly one of literal: or regex:")
        elif literal is not None:
            if not isinstance(literal, str) or len(literal.encode("utf-8")) < 3:
                bad("literal", "expected text of at least 3 UTF-8 bytes")
            fields = {"literal": literal, "nocase": nocase}
        else:
            if not isinstance(regex, str) or not regex:
                bad("regex", "expected a non-empty string")
            else:
                try:
                    RegexInfo.analyse(Pattern(0, regex_bytes(regex), nocase, True))
                except PatternError as exc:
                    bad("regex", str(exc))
            fields = {"regex": regex, "nocase": nocase}
    elif section == "fingerprints":
        sha, fpath = item.get("sha256"), item.get("path")
        if (sha is None) == (fpath is None):
            bad("", "a fingerprint needs exactly one of sha256: or path:")
        elif sha is not None:
            if not isinstance(sha, str) or not is_sha256(sha):
                bad("sha256", "expected 64 hex digits")
            else:
                fields = {"sha256": sha.lower()}
        else:
            full = os.path.join(base, str(fpath))
            try:
                fields = {"sha256": sha256_file(full), "source_path": full}
            except OSError as exc:
                bad("path", f"cannot read {fpath!r}: {exc.strerror}")
    elif section == "fingerprint_lists":
        fname = item.get("file")
        if not isinstance(fname, str):
            bad("file", "required: a hash list file (one '<sha256> [name]' per line)")
        else:
            fields = {"source_path": os.path.join(base, fname)}
    elif section == "documents":
        index = item.get("index")
        min_chars = item.get("min_chars")
        if min_chars is not None and (isinstance(min_chars, bool) or not isinstance(min_chars, int) or min_chars < 8):
            bad("min_chars", "expected an integer >= 8")
            min_chars = None
        if not isinstance(index, str):
            bad("index", "required: an index file made by 'leakmon fingerprint index'")
        else:
            fields = {"source_path": os.path.join(base, index), "min_chars": min_chars}

    if len(problems.items) != n0:
        return None
    rule = Rule(sid=sid, msg=str(msg), kind=_KIND_NAME[section], priority=priority, category=category, rev=rev,
                metadata=metadata, file=path, line=item.line, informational=informational, **fields)
    # Referenced data, loaded now so a bad list or index fails the whole set.
    if section == "markers":
        sigs.markers.append(rule)
    elif section == "fingerprints":
        assert rule.sha256 is not None
        sigs.hashes.add(rule.sha256, rule.sid, os.path.basename(rule.source_path or ""))
    elif section == "fingerprint_lists":
        assert rule.source_path is not None
        try:
            sigs.hashes.load_list(rule.source_path, rule.sid)
            digest.update(_file_digest(rule.source_path))
        except HashListError as exc:
            problems.add(rule.source_path, exc.line, str(exc).partition(": ")[2])
            return None
        except (OSError, UnicodeDecodeError) as exc:
            bad("file", f"cannot read hash list: {getattr(exc, 'strerror', None) or exc}")
            return None
    elif section == "documents":
        from detectors.partial import IndexError_, PartialIndex

        assert rule.source_path is not None
        try:
            sigs.documents.append((rule, PartialIndex.load(rule.source_path)))
            digest.update(_file_digest(rule.source_path))
        except (OSError, IndexError_) as exc:
            bad("index", f"cannot load {rule.source_path}: {getattr(exc, 'strerror', None) or exc}")
            return None
    digest.update(json.dumps(_rule_key(rule), sort_keys=True, ensure_ascii=False).encode())
    return rule


def _metadata(value: Any, bad: Any) -> dict[str, list[str]]:
    """Suricata-style metadata: each key maps to a list of strings."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        bad("metadata", "expected a mapping of key: value or key: [values]")
        return {}
    out: dict[str, list[str]] = {}
    for k, v in value.items():
        vals = v if isinstance(v, list) else [v]
        if not all(isinstance(x, (str, int, float)) and not isinstance(x, bool) for x in vals):
            bad("metadata", f"{k}: values must be strings or numbers")
            continue
        out[str(k)] = [str(x) for x in vals]
    return out


def _load_tls(value: Any, path: str, line: int, sigs: SignatureSet, problems: _Problems) -> None:
    if not isinstance(value, _Map):
        problems.add(path, line, "tls_policy: expected a mapping (source, min_version, cipher_suites)")
        return
    if sigs.tls is not None:
        problems.add(path, value.line, f"tls_policy: already defined in {sigs.tls.file}")
        return
    minv = value.get("min_version", "TLSv1.2")
    if minv not in _TLS_VERSIONS:
        problems.add(path, value.key_lines.get("min_version", value.line),
                     f"min_version: expected one of {', '.join(_TLS_VERSIONS)}")
        return
    suites: dict[int, str] = {}
    entries = value.get("cipher_suites")
    if not isinstance(entries, list) or not entries:
        problems.add(path, value.line, "tls_policy.cipher_suites: expected a non-empty list of {id, name}")
        return
    for e in entries:
        ok = isinstance(e, _Map) and isinstance(e.get("id"), int) and 0 <= e["id"] <= 0xFFFF \
            and isinstance(e.get("name"), str)
        if not ok:
            problems.add(path, getattr(e, "line", value.line), "cipher_suites: each entry needs id (0x0000-0xFFFF) and name")
            continue
        if e["id"] in suites:
            problems.add(path, e.line, f"cipher_suites: duplicate id 0x{e['id']:04X}")
            continue
        suites[e["id"]] = e["name"]
    sigs.tls = TlsPolicy(source=str(value.get("source", "")), min_version=minv, suites=suites, file=path)


def _file_digest(path: str) -> bytes:
    return bytes.fromhex(sha256_file(path))


def _rule_key(rule: Rule) -> dict[str, Any]:
    d = {k: v for k, v in rule.__dict__.items() if k not in ("file", "line")}
    return d


def regex_bytes(regex: str) -> bytes:
    """A signature regex (Unicode text) as a bytes regex over UTF-8.

    Each non-ASCII character becomes a group of its UTF-8 bytes, so a quantifier after it
    applies to the whole character; non-ASCII characters inside [...] are rejected because a
    byte class cannot express them.
    """
    out: list[str] = []
    in_class = False
    escaped = False
    for ch in regex:
        if escaped:
            escaped = False
            if ord(ch) > 0x7F:
                out.pop()  # "\\社" is just 社
            else:
                out.append(ch)
                continue
        if ch == "\\":
            out.append(ch)
            escaped = True
            continue
        if ord(ch) > 0x7F:
            if in_class:
                raise PatternError(f"regex {regex!r}: non-ASCII characters inside [...] are not supported")
            out.append("(?:" + "".join(f"\\x{b:02x}" for b in ch.encode("utf-8")) + ")")
            continue
        if ch == "[" and not in_class:
            in_class = True
        elif ch == "]" and in_class:
            in_class = False
        out.append(ch)
    return "".join(out).encode("ascii")


def tls_version_rank(version: str) -> int:
    """Order of TLS version strings (unknown -> -1)."""
    v = version.strip()
    if v == "TLSv1.0":
        v = "TLSv1"
    return _TLS_VERSIONS.index(v) if v in _TLS_VERSIONS else -1
