"""LiveCapture's idle wait must never spin: a wakeup without a retired block ends in an idle tick.

poll() only wakes the capture loop; the ring says whether a block is ready. A socket error
(ENETDOWN once the capture interface went down, flapped or was removed) is reported by poll
until SO_ERROR reads it. Before the wait took it, the loop went straight back to poll, which
returned at once again: a sensor that had taken every frame stayed at 100 % CPU until it was
stopped, and then exited cleanly (seen in a bench/live_rate.py probe; reproduced by setting the
sensor's interface down and up). The first tests model that kernel behaviour with fakes and a
clock that never moves, so a loop that polls again instead of yielding fails (the fake poller
counts its calls) rather than ending with the tick; the last one checks the real kernel in a
network namespace of its own.
"""

from __future__ import annotations

import errno
import json
import logging
import mmap
import select
import socket
import struct
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from monitor.capture import afpacket
from monitor.capture.afpacket import _BLOCK_STATUS, IDLE_TICK, TP_STATUS_USER, LiveCapture
from monitor.stats import Stats
from tests.conftest import needs_root_netns

ROOT = Path(__file__).resolve().parents[3]
BLOCK_SIZE = 1 << 17
FD = 7
MAX_POLLS = 20  # far more than one idle step needs; a spinning loop reaches it at once


class _Clock:
    """afpacket's ``time``: a monotonic clock that moves only when the code sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


class _Kernel:
    """One packet socket as poll and getsockopt see it: a pending error stays reported until
    SO_ERROR reads it; ``spurious`` reports POLLIN with no block; ``arrives`` is a frame the
    kernel retires into block 0 while the loop sleeps in poll."""

    def __init__(self, ring: Any, error: int = 0, spurious: bool = False, arrives: bytes = b"") -> None:
        self.ring = ring
        self.error = error
        self.spurious = spurious
        self.arrives = arrives
        self.polls = 0

    def poll(self, timeout_ms: int) -> list[tuple[int, int]]:
        self.polls += 1
        if self.polls > MAX_POLLS:
            raise AssertionError(f"the idle wait polled {self.polls} times without yielding (it spins)")
        if self.arrives:
            _retire_block(self.ring.ring, self.arrives)
            self.arrives = b""
        flags = select.POLLERR if self.error else 0
        if self.spurious or _retired(self.ring):
            flags |= select.POLLIN
        return [(FD, flags)] if flags else []


class _Socket:
    def __init__(self, kernel: _Kernel) -> None:
        self.kernel = kernel

    def fileno(self) -> int:
        return FD

    def getsockopt(self, level: int, option: int) -> int:
        assert (level, option) == (socket.SOL_SOCKET, socket.SO_ERROR)
        err, self.kernel.error = self.kernel.error, 0
        return err


class _Ring:
    def __init__(self) -> None:
        self.iface = "lm-idle0"
        self.block_size = BLOCK_SIZE
        self.blocks = 2
        self.next_block = 0
        self.is_loopback = False
        self.ring = mmap.mmap(-1, BLOCK_SIZE * self.blocks)
        self.sock: Any = None


def _retired(ring: _Ring) -> bool:
    """The ring's next block is the user's (what makes the kernel report POLLIN)."""
    status = struct.unpack_from("=I", ring.ring, ring.next_block * ring.block_size + _BLOCK_STATUS)[0]
    return bool(status & TP_STATUS_USER)


def _retire_block(mm: mmap.mmap, frame: bytes, sec: int = 1_700_000_000) -> None:
    """Block 0 as the kernel hands it over: one frame after a tpacket3_hdr and sockaddr_ll."""
    first, mac = 48, 82
    mm[first:first + 38] = struct.pack("=IIIIIIHHIIH", 0, sec, 0, len(frame), len(frame), 0, mac, mac + 14, 0, 0, 0)
    mm[first + mac:first + mac + len(frame)] = frame
    mm[0:20] = struct.pack("=IIIII", 3, 0, TP_STATUS_USER, 1, first)


def _setup(monkeypatch: pytest.MonkeyPatch, **kernel: Any) -> tuple[LiveCapture, _Kernel, _Clock, Stats]:
    clock = _Clock()
    monkeypatch.setattr(afpacket, "time", clock)
    ring = _Ring()
    k = _Kernel(ring, **kernel)
    ring.sock = _Socket(k)
    stats = Stats()
    cap = LiveCapture.__new__(LiveCapture)
    cap.stats = stats
    cap.snaplen = 65535
    cap.rings = [ring]  # type: ignore[list-item]
    cap._stopping = False
    cap._cnt = 0
    cap._poll = k  # type: ignore[assignment]
    cap._by_fd = {FD: ring}  # type: ignore[dict-item]
    return cap, k, clock, stats


class _Frames:
    def __init__(self) -> None:
        self.seen: list[tuple[bytes, int]] = []

    def frame(self, buf: Any, start: int, n: int, wire: int, ts: float, cnt: int, iface: str) -> bool:
        self.seen.append((buf[start:start + n], cnt))
        return True

    def walk(self, cap: LiveCapture) -> Any:
        return cap.walk(self.frame, self._unexpected, self._unexpected)

    @staticmethod
    def _unexpected(raw: Any) -> None:
        raise AssertionError(f"frame {raw!r} left the fast path")


def test_socket_error_is_taken_and_ends_in_an_idle_tick(monkeypatch: pytest.MonkeyPatch,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    cap, k, clock, stats = _setup(monkeypatch, error=errno.ENETDOWN)
    frames = _Frames()
    steps = frames.walk(cap)
    with caplog.at_level(logging.WARNING, logger="leakmon.capture"):
        assert next(steps) == 0  # an idle tick, at once: the error woke us, there is no block
    assert k.polls == 1
    assert k.error == 0  # read, so poll stops reporting it
    assert stats.get("capture.socket_errors", iface="lm-idle0") == 1
    assert clock.slept == []
    assert any("lm-idle0" in r.getMessage() and "ENETDOWN" in r.getMessage() for r in caplog.records)
    # The next wait is an ordinary one: poll reports nothing, the tick ends, nothing more is counted.
    assert next(steps) == 0
    assert k.polls == 2
    assert stats.get("capture.socket_errors", iface="lm-idle0") == 1
    assert frames.seen == []


def test_wakeup_without_block_or_error_waits_out_the_tick(monkeypatch: pytest.MonkeyPatch) -> None:
    cap, k, clock, stats = _setup(monkeypatch, spurious=True)
    steps = _Frames().walk(cap)
    assert next(steps) == 0
    assert k.polls == 1
    assert clock.slept == [pytest.approx(IDLE_TICK)]
    assert stats.get("capture.socket_errors", iface="lm-idle0") == 0
    assert next(steps) == 0  # one poll per tick, never a poll loop
    assert k.polls == 2


def test_block_retired_during_the_wait_is_walked_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    frame = bytes(range(60))
    cap, k, clock, stats = _setup(monkeypatch, arrives=frame)
    frames = _Frames()
    steps = frames.walk(cap)
    assert next(steps) == 1  # the block's frame count, not an idle tick
    assert frames.seen == [(frame, 1)]
    assert k.polls == 1
    assert clock.slept == []
    ring = cap.rings[0]
    assert ring.next_block == 1
    assert struct.unpack_from("=I", ring.ring, _BLOCK_STATUS)[0] == 0  # handed back to the kernel


# ----------------------------------------------------------------------------- the real kernel

FLAP = r"""
import json, select, socket, subprocess, sys, time
sys.path.insert(0, sys.argv[1])
from monitor.capture.afpacket import LiveCapture
from monitor.config import CaptureConfig
from monitor.stats import Stats

def link(state):
    subprocess.run(["ip", "link", "set", "lo", state], check=True)

link("up")
stats = Stats()
cfg = CaptureConfig(bpf="", ring_block_size=1 << 17, ring_blocks=4, ring_block_timeout=0.02)
cap = LiveCapture(["lo"], cfg, stats)
fd = cap.rings[0].sock.fileno()

class Counting:
    # cap._poll with a call count; a loop that keeps polling without yielding is cut short.
    def __init__(self, inner):
        self.inner, self.calls = inner, 0
    def poll(self, ms):
        self.calls += 1
        if self.calls > 20:
            raise SystemExit(json.dumps({"spins": self.calls}))
        return self.inner.poll(ms)

link("down")
link("up")
out = {"pending": [ev for _, ev in cap._poll.poll(0)]}
counting = cap._poll = Counting(cap._poll)
frames = []
steps = cap.walk(lambda buf, start, n, *rest: frames.append(buf[start:start + n]) or True,
                 lambda raw: frames.append(raw.data), lambda raw: frames.append(raw.data))
out["first_step"] = next(steps)
out["polls"] = counting.calls
out["pending_after"] = [ev for _, ev in counting.inner.poll(0)]
out["socket_errors"] = stats.get("capture.socket_errors", iface="lo")
# Capture goes on after the flap: a datagram on lo comes through the walk.
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.sendto(b"leakmon-after-flap", ("127.0.0.1", 9))
deadline = time.monotonic() + 10
while time.monotonic() < deadline and not any(b"leakmon-after-flap" in f for f in frames):
    counting.calls = 0
    next(steps)
out["captured_after_flap"] = any(b"leakmon-after-flap" in f for f in frames)
cap.close()
print(json.dumps(out))
"""


@pytest.mark.netns
@needs_root_netns()
def test_interface_flap_on_a_real_socket() -> None:
    """In a namespace of its own: set lo down and up under a live capture. The kernel reports
    ENETDOWN by POLLERR until it is read; one idle step takes it, and capture goes on."""
    ns = f"lm-idle-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        proc = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", FLAP, str(ROOT)],
                              capture_output=True, text=True, timeout=60)
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
    assert proc.returncode == 0, proc.stderr[-2000:] + proc.stdout[-2000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert res["pending"] == [select.POLLERR]  # what made the old loop spin
    assert res["first_step"] == 0 and res["polls"] == 1
    assert res["pending_after"] == []
    assert res["socket_errors"] == 1
    assert res["captured_after_flap"] is True
