"""One YAML file, typed and validated once.

Every section is a frozen dataclass whose fields carry a type, a default and help text.
Sizes take units (``64 MiB``, ``512 KB``), durations take units (``30s``, ``5m``, ``90d``).
Unknown keys and bad values raise :class:`ConfigError` naming the file and the dotted key.
Paths are resolved relative to the config file's directory.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from monitor.errors import ConfigError
from monitor.files import hash_set

_SIZE_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "kib": 1024,
    "m": 1000**2, "mb": 1000**2, "mib": 1024**2,
    "g": 1000**3, "gb": 1000**3, "gib": 1024**3,
    "t": 1000**4, "tb": 1000**4, "tib": 1024**4,
}
_DURATION_UNITS = {"": 1.0, "ms": 0.001, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


def parse_size(value: Any) -> int:
    """``"64 MiB"`` -> 67108864. Plain integers are bytes."""
    if isinstance(value, bool):
        raise ValueError("expected a size such as '64 MiB'")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("size must not be negative")
        return value
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", str(value))
    if not m or m.group(2).lower() not in _SIZE_UNITS:
        raise ValueError(f"expected a size such as '64 MiB', got {value!r}")
    return int(float(m.group(1)) * _SIZE_UNITS[m.group(2).lower()])


def parse_duration(value: Any) -> float:
    """``"5m"`` -> 300.0 seconds. Plain numbers are seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as '30s'")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError("duration must not be negative")
        return float(value)
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", str(value))
    if not m or m.group(2).lower() not in _DURATION_UNITS:
        raise ValueError(f"expected a duration such as '30s', '5m', '90d', got {value!r}")
    return float(m.group(1)) * _DURATION_UNITS[m.group(2).lower()]


def _opt(default: Any, help: str, kind: str = "", choices: tuple[str, ...] = (), minimum: float | None = None) -> Any:
    meta = {"help": help, "kind": kind, "choices": choices, "min": minimum}
    if isinstance(default, (list, dict)) or dataclasses.is_dataclass(default):
        d = default
        return field(default_factory=lambda: _copy(d), metadata=meta)
    return field(default=default, metadata=meta)


def _copy(v: Any) -> Any:
    import copy

    return copy.deepcopy(v)


def size(default: int | str, help: str) -> Any:
    return _opt(parse_size(default), help, kind="size")


def duration(default: float | str, help: str) -> Any:
    return _opt(parse_duration(default), help, kind="duration")


def choice(default: str, choices: tuple[str, ...], help: str) -> Any:
    return _opt(default, help, choices=choices)


def opt(default: Any, help: str, minimum: float | None = None) -> Any:
    return _opt(default, help, minimum=minimum)


def _unhashed(f: Any) -> Any:
    f.hash = False
    return f


def path_opt(default: str, help: str) -> Any:
    return _opt(default, help, kind="path")


def paths_opt(default: list[str], help: str) -> Any:
    return _opt(default, help, kind="paths")


# ---------------------------------------------------------------- sections


@dataclass(frozen=True)
class SensorConfig:
    """``sensor``: identity of this sensor."""

    name: str = opt("leakmon-sensor", "Sensor name written in events and reports")


@dataclass(frozen=True)
class NetworksConfig:
    """``networks``: the protected side and the approved destinations."""

    protected: list[str] = opt([], "CIDRs of the 保護システム (protected side)")
    approved_destinations: list[str] = opt(
        [], "CIDRs and host names (SNI, HTTP Host, DNS answers) of partners under a confidentiality contract"
    )


@dataclass(frozen=True)
class CaptureConfig:
    """``capture``: capture sources (AF_PACKET ring, BPF)."""

    snaplen: int = opt(65535, "Largest frame captured (GRO/veth frames reach 64 KiB)", minimum=64)
    promiscuous: bool = opt(True, "Put interfaces in promiscuous mode")
    bpf: str = opt("", "BPF filter attached in the kernel (live) or applied on replay")
    # 256 x 1 MiB: the same 256 MiB of ring as 64 x 4 MiB, but a 10 ms retire timeout keeps the
    # packet-to-alert p99 well under 100 ms (measured: p99 22-27 ms vs 101-130 ms at 100 ms).
    ring_block_size: int = size("1 MiB", "TPACKET_V3 block size")
    ring_blocks: int = opt(256, "TPACKET_V3 number of blocks", minimum=2)
    ring_block_timeout: float = duration("10ms", "TPACKET_V3 block retire timeout (bounds capture latency)")
    fanout_group: int = opt(0, "PACKET_FANOUT group id for --workers (0 = derive from pid)", minimum=0)


@dataclass(frozen=True)
class DecoderConfig:
    """``decoder``: packet decoding and decapsulation."""

    checksum_validation: bool = opt(False, "Validate IPv4/TCP/UDP checksums (off: capture hosts see offloaded checksums)")
    vxlan_ports: list[int] = opt([4789], "UDP ports decapsulated as VXLAN")
    decapsulate_gre: bool = opt(True, "Decapsulate GRE and ERSPAN (type II/III)")
    max_layers: int = opt(8, "Maximum nested encapsulation/VLAN layers", minimum=1)


@dataclass(frozen=True)
class DefragConfig:
    """``defrag``: IP defragmentation."""

    memcap: int = size("32 MiB", "Memory for IP fragments awaiting reassembly")
    timeout: float = duration("60s", "Drop incomplete fragment sets after this long")
    max_fragments: int = opt(1024, "Maximum fragments per datagram", minimum=1)


@dataclass(frozen=True)
class FlowTimeouts:
    """``flow.timeouts``: idle timeouts by flow state."""

    new: float = duration("30s", "Idle timeout of flows without an established handshake")
    established: float = duration("300s", "Idle timeout of established TCP flows")
    closed: float = duration("10s", "Idle timeout after FIN/RST")
    udp: float = duration("60s", "Idle timeout of UDP flows")
    other: float = duration("30s", "Idle timeout of other protocols")


@dataclass(frozen=True)
class FlowConfig:
    """``flow``: the flow table."""

    memcap: int = size("512 MiB", "Memory for the flow table: each flow is charged 2 KiB when created and 7 KiB more on its first stream payload (parser, detection and reassembly state)")
    max_flows: int = opt(1_000_000, "Hard cap on concurrent flows", minimum=1)
    timeouts: FlowTimeouts = opt(FlowTimeouts(), "Idle timeouts by state")


@dataclass(frozen=True)
class StreamConfig:
    """``stream``: TCP reassembly."""

    memcap: int = size("256 MiB", "Global memory for out-of-order TCP segments")
    per_flow_memcap: int = size("4 MiB", "Out-of-order bytes held per flow direction")
    overlap_policy: str = choice("first", ("first", "last", "linux", "windows", "bsd"), "Which bytes win when segments overlap")
    depth: int = size(0, "Reassembly depth per direction (0 = unlimited); hitting it writes an event")
    gap_wait: float = duration("2s", "How long a hole may wait for its segment before it is skipped")
    gap_wait_bytes: int = size("1 MiB", "How many bytes may queue behind a hole before it is skipped")
    urgent_policy: str = choice("oob", ("oob", "inline"), "TCP urgent data: out-of-band (removed) or inline")
    chunk_size: int = size("64 KiB", "In-order bytes of one flow direction collected and handed to the protocol parser and the stream scan at once (0 = every segment on its own); a chunk also goes on when the other direction sends, at the flow's next out-of-order or control packet, every second of traffic time and after every live ring block")
    chunk_memcap: int = size("32 MiB", "Memory for collected chunks of all flows; when full, every chunk goes on at once")


@dataclass(frozen=True)
class HttpConfig:
    """``app_layer.http``: HTTP/1.x parser limits."""

    decompress_layer_limit: int = opt(3, "Maximum stacked Content-Encodings", minimum=1)
    max_header_size: int = size("64 KiB", "Largest request/response header block")
    body_limit: int = size("100 MiB", "Largest body tracked as a file (beyond: TRUNCATED)")
    range_buffer: int = size("16 MiB", "Out-of-order 206 range bytes held per flow to assemble one file")


@dataclass(frozen=True)
class SmtpConfig:
    """``app_layer.smtp``: SMTP and MIME parser limits."""

    max_line: int = size("64 KiB", "Longest SMTP/MIME line kept")
    mime_max_depth: int = opt(20, "Maximum MIME nesting depth", minimum=1)


@dataclass(frozen=True)
class AppLayerConfig:
    """``app_layer``: application protocol parsers."""

    http: HttpConfig = opt(HttpConfig(), "HTTP/1.x")
    smtp: SmtpConfig = opt(SmtpConfig(), "SMTP and MIME")
    ftp_data_timeout: float = duration("120s", "How long an FTP data-channel expectation lives")


@dataclass(frozen=True)
class ContentConfig:
    """``content``: content decoders (archives, documents) and their limits."""

    max_buffer: int = size("64 MiB", "Largest file buffered for content decoders (zip, Office, PDF)")
    max_decompressed: int = size("256 MiB", "Largest output of one decompression")
    max_ratio: int = opt(200, "Maximum decompression ratio before a bomb is declared", minimum=1)
    max_depth: int = opt(8, "Maximum archive/container nesting depth", minimum=1)
    max_members: int = opt(10_000, "Maximum members read from one archive", minimum=1)
    max_text: int = size("32 MiB", "Largest text buffer extracted from one document")
    cache: int = size("32 MiB", "Memory for results of recently decoded archives/documents, replayed when the same "
                      "bytes are sent again (one attachment to many recipients); 0 turns it off")
    # Left out of the hash: ContentConfig keys the decoded-archive cache, and a list is unhashable
    # (the hashes do not change what a decoder produces).
    hashes: list[str] = _unhashed(opt(["sha256"], "Hashes computed for every file and reported in fileinfo "
                                      "(Suricata's force-hash): sha256 (always required: detection uses it), md5, sha1"))


@dataclass(frozen=True)
class DetectionConfig:
    """``detection``: the detection engine."""

    engine: str = choice("auto", ("auto", "hyperscan", "ahocorasick"), "Matcher engine (auto: Hyperscan when installed)")
    partial_min_chars: int = opt(60, "Characters an outgoing text must share with a registered document", minimum=8)
    context_chars: int = opt(16, "Neighbouring characters kept (masked) in redacted alert context", minimum=0)


@dataclass(frozen=True)
class Suppression:
    """One ``policy.suppress`` entry: a suppressed sid/host pair."""

    sid: int = opt(0, "Signature id (0 = any)")
    host: str = opt("", "Protected host IP or CIDR ('' = any)")


@dataclass(frozen=True)
class Threshold:
    """One ``policy.thresholds`` entry: a rate limit per sid and host."""

    sid: int = opt(0, "Signature id")
    count: int = opt(1, "Alerts allowed per window per host", minimum=1)
    seconds: float = duration("60s", "Window length")


@dataclass(frozen=True)
class PolicyConfig:
    """``policy``: which findings become alerts."""

    inbound_events: bool = opt(False, "Write an informational 'finding' event for markers flowing into the protected side")
    plaintext_violation: bool = opt(True, "Alert protected data leaving in clear text (基準 10(5)エ)")
    weak_crypto_violation: bool = opt(True, "Alert TLS below 1.2 or non-CRYPTREC suites from protected hosts (基準 10(7))")
    suppress: list[Suppression] = opt([], "Suppressed sid/host pairs")
    thresholds: list[Threshold] = opt([], "Rate limits per sid and host")


@dataclass(frozen=True)
class EveConfig:
    """``outputs.eve``: the EVE JSON output."""

    path: str = opt("eve.json", "EVE JSON lines file ('-' = stdout); relative to the config")
    types: list[str] = opt([], "Event types to write (empty = all)")


@dataclass(frozen=True)
class OutputsConfig:
    """``outputs``: event outputs."""

    eve: EveConfig = opt(EveConfig(), "EVE JSON output")
    stats_interval: float = duration("60s", "Interval of periodic stats records when live")


@dataclass(frozen=True)
class EvidenceConfig:
    """``evidence``: the encrypted evidence store."""

    enabled: bool = opt(True, "Keep packets and files for incidents")
    dir: str = path_opt("evidence", "Evidence store (encrypted at rest)")
    key_file: str = path_opt("", "32-byte AES-256-GCM key (raw or hex) file")
    key_env: str = opt("LEAKMON_EVIDENCE_KEY", "Environment variable holding the hex key (used when key_file is empty)")
    ring_packets: int = opt(2000, "Packets kept per flow from its start", minimum=1)
    ring_bytes: int = size("8 MiB", "Bytes kept per flow from its start")


@dataclass(frozen=True)
class IncidentsConfig:
    """``incidents``: the incident database and report drafts."""

    db: str = path_opt("leakmon.db", "SQLite incident database (WAL)")
    window: float = duration("1h", "Alerts for the same protected host and destination within this window join one incident")
    templates: str = path_opt("", "Folder of report templates (empty = built-in alerts/templates)")
    language: str = choice("ja", ("ja", "en"), "Language of report drafts")
    synchronous: str = choice("normal", ("normal", "full"), "SQLite synchronous mode (WAL): normal survives a crash, full also a power loss")


@dataclass(frozen=True)
class Contact:
    """One ``reporting.chain`` entry: a person of the reporting chain."""

    role: str = opt("", "責任者 / 連絡担当者 / ...")
    name: str = opt("", "Name")
    organization: str = opt("", "Organisation / department")
    phone: str = opt("", "Phone")
    email: str = opt("", "E-mail")


@dataclass(frozen=True)
class ReportingConfig:
    """``reporting``: company, contract and reporting chain in reports."""

    company: str = opt("", "Company name in reports")
    contract: str = opt("", "Contract identifier in reports")
    chain: list[Contact] = opt([], "Reporting chain (連絡系統図)")


@dataclass(frozen=True)
class AuditConfig:
    """``audit``: the hash-chained audit log."""

    path: str = path_opt("audit.jsonl", "Hash-chained audit log")
    key_file: str = path_opt("", "HMAC key file (empty: key_env)")
    key_env: str = opt("LEAKMON_AUDIT_KEY", "Environment variable holding the HMAC key")
    retention: float = duration("92d", "Keep audit logs at least this long (>= 3 months, 基準 10(11)イ)")
    rotate_size: int = size("64 MiB", "Rotate the audit log at this size")


@dataclass(frozen=True)
class WebhookConfig:
    """``notify.webhook``: the webhook receiver."""

    url: str = opt("", "Webhook URL (JSON POST, Alertmanager-style)")
    timeout: float = duration("5s", "Per-request timeout")
    retries: int = opt(5, "Retries with exponential backoff", minimum=0)


@dataclass(frozen=True)
class EmailConfig:
    """``notify.email``: the e-mail receiver."""

    host: str = opt("", "SMTP relay host")
    port: int = opt(587, "SMTP port")
    starttls: bool = opt(True, "Require STARTTLS (refuse to send otherwise); false = implicit TLS (SMTPS), never clear text")
    ca_file: str = path_opt("", "CA bundle that verifies the SMTP/webhook server certificate (empty = system store)")
    username: str = opt("", "SMTP user")
    password_env: str = opt("LEAKMON_SMTP_PASSWORD", "Environment variable with the SMTP password")
    sender: str = opt("", "From address")
    recipients: list[str] = opt([], "To addresses")
    retries: int = opt(5, "Retries with exponential backoff", minimum=0)


@dataclass(frozen=True)
class NotifyConfig:
    """``notify``: notifications of new incidents."""

    webhook: WebhookConfig = opt(WebhookConfig(), "Webhook receiver")
    email: EmailConfig = opt(EmailConfig(), "E-mail receiver")
    queue_size: int = opt(1000, "Pending notifications kept (beyond: dropped and counted)", minimum=1)


@dataclass(frozen=True)
class MetricsConfig:
    """``metrics``: the Prometheus exporter."""

    addr: str = opt("127.0.0.1:9917", "Prometheus exporter address (HOST:PORT; '' disables)")
    label_values_cap: int = opt(200, "Distinct values kept per metric label (beyond: 'other', counted)", minimum=1)


@dataclass(frozen=True)
class CoverageConfig:
    """``coverage``: the durable coverage (常時監視) record."""

    path: str = path_opt("coverage.jsonl", "Durable coverage record")
    stall_after: float = duration("5m", "No packets for this long on an interface = capture stalled")
    drop_ratio: float = opt(0.01, "Kernel drop ratio above which monitoring is not effective", minimum=0)
    heartbeat: float = duration("60s", "Interval of coverage heartbeats")


@dataclass(frozen=True)
class CanaryConfig:
    """``canary``: the canary self-test."""

    enabled: bool = opt(False, "Periodically inject a synthetic flow carrying the canary marker")
    interval: float = duration("5m", "Canary period")
    marker: str = opt("LEAKMON-CANARY-7f3a9c", "Canary marker text (not protected data)")
    sid: int = opt(9999901, "Signature id of the canary alert (category 'canary', never an incident)", minimum=1)
    timeout: float = duration("30s", "A canary flow that raised no alert within this long counts as failed")


@dataclass(frozen=True)
class Config:
    """The whole configuration file (``load_config``); each field is one section."""

    sensor: SensorConfig = opt(SensorConfig(), "Sensor identity")
    networks: NetworksConfig = opt(NetworksConfig(), "Protected networks and approved destinations")
    signatures: list[str] = paths_opt([], "Signature files or directories (relative to the config)")
    capture: CaptureConfig = opt(CaptureConfig(), "Capture")
    decoder: DecoderConfig = opt(DecoderConfig(), "Packet decoding")
    defrag: DefragConfig = opt(DefragConfig(), "IP defragmentation")
    flow: FlowConfig = opt(FlowConfig(), "Flow table")
    stream: StreamConfig = opt(StreamConfig(), "TCP reassembly")
    app_layer: AppLayerConfig = opt(AppLayerConfig(), "Application protocols")
    content: ContentConfig = opt(ContentConfig(), "Content decoders")
    detection: DetectionConfig = opt(DetectionConfig(), "Detection engine")
    policy: PolicyConfig = opt(PolicyConfig(), "Alert policy")
    outputs: OutputsConfig = opt(OutputsConfig(), "Outputs")
    evidence: EvidenceConfig = opt(EvidenceConfig(), "Evidence")
    incidents: IncidentsConfig = opt(IncidentsConfig(), "Incidents")
    reporting: ReportingConfig = opt(ReportingConfig(), "Reporting chain")
    audit: AuditConfig = opt(AuditConfig(), "Audit log")
    notify: NotifyConfig = opt(NotifyConfig(), "Notifications")
    metrics: MetricsConfig = opt(MetricsConfig(), "Prometheus metrics")
    coverage: CoverageConfig = opt(CoverageConfig(), "Coverage (常時監視) record")
    canary: CanaryConfig = opt(CanaryConfig(), "Canary self-test")
    # Set by the loader, not by the file.
    source: str = field(default="", metadata={"internal": True})
    base_dir: str = field(default=".", metadata={"internal": True})

    def resolve(self, p: str) -> str:
        """A path from the config, made absolute relative to the config file's folder."""
        if not p or p == "-":
            return p
        return p if os.path.isabs(p) else os.path.normpath(os.path.join(self.base_dir, p))


# ---------------------------------------------------------------- loader


def _type_of(cls: type, name: str) -> Any:
    return typing.get_type_hints(cls)[name]


def _convert(value: Any, tp: Any, f: dataclasses.Field[Any], file: str, key: str) -> Any:
    meta = f.metadata
    kind = meta.get("kind", "")
    try:
        if kind == "size":
            return parse_size(value)
        if kind == "duration":
            return parse_duration(value)
        origin = typing.get_origin(tp)
        if origin in (list, typing.List):  # noqa: UP006
            (item_tp,) = typing.get_args(tp)
            if value is None:
                return []
            if not isinstance(value, list):
                raise ValueError(f"expected a list, got {type(value).__name__}")
            if dataclasses.is_dataclass(item_tp):
                return [_build(item_tp, v, file, f"{key}[{i}]") for i, v in enumerate(value)]
            return [_scalar(v, item_tp) for v in value]
        if isinstance(tp, types.UnionType):
            tp = [a for a in typing.get_args(tp) if a is not type(None)][0]
        if dataclasses.is_dataclass(tp):
            return _build(tp, value, file, key)  # type: ignore[arg-type]
        v = _scalar(value, tp)
        if meta.get("choices") and v not in meta["choices"]:
            raise ValueError(f"must be one of {', '.join(meta['choices'])}, got {v!r}")
        if meta.get("min") is not None and v < meta["min"]:
            raise ValueError(f"must be >= {meta['min']}, got {v!r}")
        return v
    except ConfigError:
        raise
    except (ValueError, TypeError) as exc:
        raise ConfigError(file, key, str(exc)) from None


def _scalar(value: Any, tp: Any) -> Any:
    if tp is bool:
        if not isinstance(value, bool):
            raise ValueError(f"expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if isinstance(value, (dict, list)) or value is None:
            raise ValueError(f"expected a string, got {value!r}")
        return str(value)
    return value


def _build(cls: Any, data: Any, file: str, prefix: str) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(file, prefix or "(top level)", f"expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    kwargs: dict[str, Any] = {}
    for k, v in data.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if k not in fields:
            known = ", ".join(sorted(fields))
            raise ConfigError(file, key, f"unknown key (known here: {known})")
        kwargs[k] = _convert(v, hints[k], fields[k], file, key)
    return cls(**kwargs)


def _validate(cfg: Config) -> None:
    file = cfg.source
    for i, cidr in enumerate(cfg.networks.protected):
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            raise ConfigError(file, f"networks.protected[{i}]", f"not a CIDR: {cidr!r}") from None
    if cfg.audit.retention < 90 * 86400:
        raise ConfigError(
            file, "audit.retention",
            "must be at least 90d: 基準 10(11)イ requires audit logs to be kept at least 3 months",
        )
    try:
        hash_set(cfg.content.hashes)
    except ValueError as exc:
        raise ConfigError(file, "content.hashes", str(exc)) from None
    if cfg.metrics.addr and not re.fullmatch(r"\[?[0-9A-Za-z.:-]*\]?:\d{1,5}", cfg.metrics.addr):
        raise ConfigError(file, "metrics.addr", f"expected HOST:PORT, got {cfg.metrics.addr!r}")


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read, type-check and validate a config file. Raises ConfigError."""
    p = Path(path)
    file = str(p)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(file, "", f"cannot read: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else ""
        raise ConfigError(file, where, f"not valid YAML: {getattr(exc, 'problem', exc)}") from None
    cfg = _build(Config, data or {}, file, "")
    cfg = dataclasses.replace(cfg, source=file, base_dir=str(p.resolve().parent))
    _validate(cfg)
    return cfg


def default_config(**overrides: Any) -> Config:
    """A Config with defaults (tests and ad-hoc hunts); overrides replace top-level sections."""
    cfg = Config()
    return dataclasses.replace(cfg, **overrides) if overrides else cfg


def describe(cls: Any = Config, prefix: str = "") -> list[tuple[str, str, str]]:
    """(key, default, help) for every option, for docs and `check-config --explain`."""
    rows: list[tuple[str, str, str]] = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.metadata.get("internal"):
            continue
        key = f"{prefix}.{f.name}" if prefix else f.name
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            rows.append((key, "", f.metadata.get("help", "")))
            rows.extend(describe(tp, key))
        else:
            factory: Any = f.default_factory
            default = f.default if f.default is not dataclasses.MISSING else factory()
            rows.append((key, repr(default), f.metadata.get("help", "")))
    return rows
