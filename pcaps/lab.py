"""A two-host lab in network namespaces, for recording real client/server traffic.

    with Lab("http") as lab:                    # namespaces lm-http-c / lm-http-s + veth
        with lab.capture("pcaps/x.pcap"):       # tcpdump on the client side
            srv = lab.server(["python3", "-m", "http.server", "8080"])
            lab.wait_port(8080)
            lab.client(["curl", "-s", f"http://{lab.server_ip}:8080/"])

Addresses: client 10.77.0.1 / fd77::1 (protected side), server 10.77.0.2 / fd77::2.
Everything is deleted on exit. Needs root (or CAP_NET_ADMIN) and iproute2, tcpdump.
Traffic never leaves the namespaces.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence

CLIENT_IP = "10.77.0.1"
SERVER_IP = "10.77.0.2"
CLIENT_IP6 = "fd77::1"
SERVER_IP6 = "fd77::2"


def available() -> bool:
    """True when namespaces can be created here (root + ip + tcpdump)."""
    return os.geteuid() == 0 and shutil.which("ip") is not None and shutil.which("tcpdump") is not None


def _sh(*args: str) -> None:
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


class Lab:
    def __init__(self, name: str, mtu: int = 1500, offload: bool = False) -> None:
        tag = f"{name[:6]}{os.getpid() % 10000}"
        self.cns = f"lmc-{tag}"
        self.sns = f"lms-{tag}"
        self.cif = f"lc{tag}"[:15]
        self.sif = f"ls{tag}"[:15]
        self.mtu = mtu
        self.offload = offload
        self.client_ip, self.server_ip = CLIENT_IP, SERVER_IP
        self.client_ip6, self.server_ip6 = CLIENT_IP6, SERVER_IP6
        self._procs: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> Lab:
        self.close()
        _sh("ip", "netns", "add", self.cns)
        _sh("ip", "netns", "add", self.sns)
        _sh("ip", "link", "add", self.cif, "netns", self.cns, "type", "veth", "peer", "name", self.sif, "netns", self.sns)
        for ns, ifc, ip4, ip6 in ((self.cns, self.cif, CLIENT_IP, CLIENT_IP6), (self.sns, self.sif, SERVER_IP, SERVER_IP6)):
            _sh("ip", "-n", ns, "link", "set", "lo", "up")
            _sh("ip", "-n", ns, "link", "set", ifc, "mtu", str(self.mtu))
            _sh("ip", "-n", ns, "addr", "add", f"{ip4}/24", "dev", ifc)
            _sh("ip", "-n", ns, "addr", "add", f"{ip6}/64", "dev", ifc, "nodad")
            _sh("ip", "-n", ns, "link", "set", ifc, "up")
            if not self.offload and shutil.which("ethtool"):
                subprocess.run(["ip", "netns", "exec", ns, "ethtool", "-K", ifc, "tso", "off", "gso", "off", "gro", "off"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for p in reversed(self._procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    p.kill()
        self._procs.clear()
        for ns in (self.cns, self.sns):
            subprocess.run(["ip", "netns", "del", ns], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def _exec(self, ns: str, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", ns, *argv]

    def server(self, argv: Sequence[str], **kw: object) -> subprocess.Popen[bytes]:
        """Start a long-running process in the server namespace (stopped on exit)."""
        p = subprocess.Popen(self._exec(self.sns, argv), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **kw)  # type: ignore[call-overload]
        self._procs.append(p)
        return p

    def background(self, ns_side: str, argv: Sequence[str], **kw: object) -> subprocess.Popen[bytes]:
        ns = self.cns if ns_side == "client" else self.sns
        p = subprocess.Popen(self._exec(ns, argv), **kw)  # type: ignore[call-overload]
        self._procs.append(p)
        return p

    def client(self, argv: Sequence[str], timeout: float = 60, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        """Run a command to completion in the client namespace."""
        return subprocess.run(self._exec(self.cns, argv), capture_output=True, timeout=timeout, input=input, check=True)

    def run(self, side: str, argv: Sequence[str], timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
        ns = self.cns if side == "client" else self.sns
        return subprocess.run(self._exec(ns, argv), capture_output=True, timeout=timeout, check=True)

    def wait_port(self, port: int, timeout: float = 10.0, ip: str | None = None) -> None:
        """Wait until something listens on the server's TCP port."""
        deadline = time.monotonic() + timeout
        target = ip or SERVER_IP
        while time.monotonic() < deadline:
            r = subprocess.run(self._exec(self.cns, ["python3", "-c",
                               f"import socket;s=socket.create_connection(('{target}',{port}),1);s.close()"]),
                               capture_output=True)
            if r.returncode == 0:
                return
            time.sleep(0.1)
        raise TimeoutError(f"nothing listens on {target}:{port}")

    @contextlib.contextmanager
    def capture(self, path: str, side: str = "client", bpf: str = "", snaplen: int = 262144) -> Iterator[None]:
        """Record the veth with tcpdump while the block runs; the file is complete on exit."""
        ns, ifc = (self.cns, self.cif) if side == "client" else (self.sns, self.sif)
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        argv = ["tcpdump", "-i", ifc, "-s", str(snaplen), "-U", "-w", path, "--immediate-mode"]
        if bpf:
            argv.append(bpf)
        p = subprocess.Popen(self._exec(ns, argv), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        # tcpdump prints "listening on" once the socket is open.
        assert p.stderr is not None
        deadline = time.monotonic() + 10
        line = b""
        while time.monotonic() < deadline and b"listening" not in line:
            line = p.stderr.readline()
            if not line and p.poll() is not None:
                raise RuntimeError("tcpdump failed to start")
        try:
            yield
        finally:
            time.sleep(0.3)
            p.send_signal(signal.SIGINT)
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
