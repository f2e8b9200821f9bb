"""Notifications of new incidents that never block the packet path.

:meth:`Notifier.submit` only puts the first-report *summary* on a bounded queue (``put_nowait``;
a full queue drops the notification and counts it). One background thread per receiver delivers:

* webhook: a JSON POST in the shape Alertmanager sends to its webhook receivers
  (``{"version": "4", "status": "firing", "alerts": [{"labels", "annotations", "startsAt"}]}``),
  so Alertmanager-compatible tooling (chat bridges, ticketing) accepts it unchanged;
* e-mail over SMTP: STARTTLS is required (``email.starttls: true``; a server that does not offer
  it gets nothing) or implicit TLS (``starttls: false``, SMTPS). Never in clear.

Failed deliveries are retried with exponential backoff and counted. The summary carries ids,
addresses, host names and signature names only: no URL, subject, file name or matched content.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import queue
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from monitor.config import NotifyConfig
from monitor.stats import Stats

# The delivery modules (smtplib, ssl, urllib.request, email: ~30 ms of imports) are imported by
# the channel that uses them, so a sensor without receivers never loads them.
if TYPE_CHECKING:
    import smtplib
    import ssl

log = logging.getLogger("leakmon.notify")


class Refused(Exception):
    """Delivery refused on policy (no STARTTLS): not retried."""


def _utc(ts: float) -> str:
    return _dt.datetime.fromtimestamp(ts, _dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def alertmanager_payload(s: dict[str, Any]) -> dict[str, Any]:
    """The Alertmanager webhook shape for one incident summary."""
    labels = {
        "alertname": "LeakmonIncident",
        "incident_id": str(s.get("incident_id", "")),
        "sensor": str(s.get("sensor", "")),
        "severity": str(s.get("severity", "")),
        "protected_host": str(s.get("host_ip", "")),
        "destination": str(s.get("dest_ip", "")),
        "app_proto": str(s.get("app_proto", "")),
        "sid": ",".join(str(x) for x in s.get("sids", [])),
    }
    annotations = {"summary": summary_title(s), "description": summary_text(s)}
    alert = {"status": "firing", "labels": labels, "annotations": annotations,
             "startsAt": _utc(float(s.get("traffic_ts") or 0.0)), "endsAt": "0001-01-01T00:00:00Z",
             "generatorURL": "", "fingerprint": str(s.get("incident_id", ""))}
    return {"version": "4", "groupKey": f"leakmon:{labels['incident_id']}", "truncatedAlerts": 0,
            "status": "firing", "receiver": "leakmon", "groupLabels": {"incident_id": labels["incident_id"]},
            "commonLabels": labels, "commonAnnotations": annotations, "externalURL": "", "alerts": [alert]}


def summary_title(s: dict[str, Any]) -> str:
    if s.get("language") == "en":
        return (f"[leakmon] {s.get('incident_id')}: suspected leak of protected information from "
                f"{s.get('host_ip')} to {s.get('dest_ip')} (first report draft)")
    return (f"[leakmon] {s.get('incident_id')}: 情報漏えいの疑い（保護対象データの送信を検知） {s.get('host_ip')} → "
            f"{s.get('dest_ip')}（第一報案）")


def summary_text(s: dict[str, Any]) -> str:
    en = s.get("language") == "en"
    rows = [
        ("Incident" if en else "事案番号", s.get("incident_id")),
        ("Sensor" if en else "センサー", s.get("sensor")),
        ("Detected at" if en else "検知日時", s.get("detected_at")),
        ("Traffic time" if en else "通信日時", s.get("traffic_at")),
        ("Internal host" if en else "送信元（社内）", f"{s.get('host_ip')} {' '.join(s.get('host_names', []))}".strip()),
        ("Destination" if en else "送信先",
         f"{s.get('dest_ip')}:{s.get('dest_port')} {' '.join(s.get('dest_names', []))}".strip()),
        ("Protocol" if en else "プロトコル", s.get("app_proto")),
        ("Signatures" if en else "シグネチャ",
         "; ".join(f"{sid} {name}" for sid, name in zip(s.get("sids", []), s.get("signatures", []), strict=False))),
        ("Severity" if en else "重要度", s.get("severity")),
        ("Action" if en else "措置", s.get("action")),
        ("Evidence" if en else "証拠", s.get("evidence")),
        ("First report draft" if en else "第一報案", s.get("report_path")),
    ]
    return "\n".join(f"{k}: {v}" for k, v in rows if v not in (None, ""))


class _Channel:
    def __init__(self, name: str, deliver: Callable[[dict[str, Any]], None], retries: int, size: int) -> None:
        self.name = name
        self.deliver = deliver
        self.retries = retries
        self.q: queue.Queue[dict[str, Any] | None] = queue.Queue(maxsize=size)
        self.thread: threading.Thread | None = None


class Notifier:
    """Background delivery of incident summaries to the configured webhook and e-mail receivers."""

    def __init__(self, cfg: NotifyConfig, stats: Stats | None = None, *, base_dir: str = ".",
                 ssl_context: ssl.SSLContext | None = None, backoff_base: float = 1.0, backoff_max: float = 300.0,
                 email_timeout: float = 30.0) -> None:
        self.cfg = cfg
        self.stats = stats or Stats()
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.email_timeout = email_timeout
        self._stop = threading.Event()
        self._ssl = ssl_context
        ca = getattr(cfg.email, "ca_file", "")
        if self._ssl is None and ca:
            import ssl

            self._ssl = ssl.create_default_context(cafile=ca if os.path.isabs(ca) else os.path.join(base_dir, ca))
        self.channels: list[_Channel] = []
        if cfg.webhook.url:
            if not cfg.webhook.url.startswith(("http://", "https://")):
                raise ValueError("notify.webhook.url must be an http:// or https:// URL")
            import urllib.request  # noqa: F401 - loaded at start-up, not on the first delivery

            self.channels.append(_Channel("webhook", self._webhook, cfg.webhook.retries, cfg.queue_size))
        if cfg.email.host and cfg.email.recipients:
            import smtplib  # noqa: F401 - as above
            from email.message import EmailMessage  # noqa: F401

            self.channels.append(_Channel("email", self._email, cfg.email.retries, cfg.queue_size))
        for ch in self.channels:
            ch.thread = threading.Thread(target=self._run, args=(ch,), name=f"leakmon-notify-{ch.name}", daemon=True)
            ch.thread.start()

    # ------------------------------------------------------------ packet path

    def submit(self, summary: dict[str, Any]) -> None:
        """Queue a summary for every receiver; never blocks, never raises."""
        for ch in self.channels:
            try:
                ch.q.put_nowait(summary)
                self.stats.incr("notify.queued", channel=ch.name)
            except queue.Full:
                self.stats.incr("notify.dropped", channel=ch.name)

    # ------------------------------------------------------------ workers

    def _run(self, ch: _Channel) -> None:
        while not self._stop.is_set():
            item = ch.q.get()
            try:
                if item is None:
                    return
                self._deliver_with_retries(ch, item)
            finally:
                ch.q.task_done()

    def _deliver_with_retries(self, ch: _Channel, item: dict[str, Any]) -> None:
        for attempt in range(ch.retries + 1):
            if self._stop.is_set():
                return
            try:
                ch.deliver(item)
                self.stats.incr("notify.sent", channel=ch.name)
                return
            except Refused as exc:
                self.stats.incr("notify.refused", channel=ch.name, reason=str(exc))
                log.error("notification refused (%s): %s", ch.name, exc)
                return
            except Exception as exc:  # noqa: BLE001 - any network failure is retried
                log.warning("notification via %s failed (attempt %d): %s", ch.name, attempt + 1, type(exc).__name__)
            if attempt < ch.retries:
                self.stats.incr("notify.retries", channel=ch.name)
                if self._stop.wait(min(self.backoff_max, self.backoff_base * (2 ** attempt))):
                    return
        self.stats.incr("notify.failed", channel=ch.name)

    def _webhook(self, s: dict[str, Any]) -> None:
        import urllib.request

        body = json.dumps(alertmanager_payload(s), ensure_ascii=False).encode()
        req = urllib.request.Request(self.cfg.webhook.url, data=body, method="POST",
                                     headers={"Content-Type": "application/json", "User-Agent": "leakmon"})
        kw: dict[str, Any] = {"timeout": self.cfg.webhook.timeout}
        if self._ssl is not None and self.cfg.webhook.url.startswith("https://"):
            kw["context"] = self._ssl
        with urllib.request.urlopen(req, **kw) as resp:  # noqa: S310 - scheme checked at startup
            if not 200 <= resp.status < 300:
                raise OSError(f"webhook answered {resp.status}")

    def _email(self, s: dict[str, Any]) -> None:
        import smtplib
        import ssl
        from email.message import EmailMessage

        e = self.cfg.email
        msg = EmailMessage()
        msg["From"] = e.sender or "leakmon@localhost"
        msg["To"] = ", ".join(e.recipients)
        msg["Subject"] = summary_title(s)
        msg.set_content(summary_text(s) + "\n")
        ctx = self._ssl or ssl.create_default_context()
        password = os.environ.get(e.password_env, "") if e.password_env else ""
        smtp: smtplib.SMTP
        if e.starttls:
            smtp = smtplib.SMTP(e.host, e.port, timeout=self.email_timeout)
            try:
                smtp.ehlo()
                if not smtp.has_extn("starttls"):
                    raise Refused("no_starttls")
                smtp.starttls(context=ctx)
                smtp.ehlo()
                if e.username:
                    smtp.login(e.username, password)
                smtp.send_message(msg)
            finally:
                try:
                    smtp.quit()
                except Exception:  # noqa: BLE001 - the connection may already be gone
                    smtp.close()
        else:
            with smtplib.SMTP_SSL(e.host, e.port, timeout=self.email_timeout, context=ctx) as ssmtp:
                if e.username:
                    ssmtp.login(e.username, password)
                ssmtp.send_message(msg)

    # ------------------------------------------------------------ lifecycle

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every queue is drained (tests, shutdown). True when drained."""
        import time

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(ch.q.unfinished_tasks == 0 for ch in self.channels):
                return True
            time.sleep(0.01)
        return False

    def close(self, timeout: float = 2.0) -> None:
        """Stop the workers (pending notifications are abandoned after ``timeout``)."""
        self.flush(timeout)
        self._stop.set()
        for ch in self.channels:
            try:
                ch.q.put_nowait(None)
            except queue.Full:
                pass
        for ch in self.channels:
            if ch.thread is not None:
                ch.thread.join(timeout=0.5)
