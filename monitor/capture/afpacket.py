"""Live capture on Linux AF_PACKET sockets with a memory-mapped TPACKET_V3 ring.

One socket per interface, each with its own ring of ``capture.ring_blocks`` blocks of
``capture.ring_block_size`` bytes. The kernel fills whole blocks and hands them over (or
retires a partly filled one after ``capture.ring_block_timeout``), so a busy link costs one
poll per block, not one system call per packet. A block must hold the largest frame: with
GRO/GSO and veth, frames reach 64 KiB, hence the 4 MiB default.

* Promiscuous mode through ``PACKET_ADD_MEMBERSHIP`` (undone by the kernel when the socket closes).
* ``capture.bpf`` is compiled by libpcap and attached with ``SO_ATTACH_FILTER`` before the socket
  is bound, so no unfiltered frame ever reaches user space. The filter also enforces the snaplen.
* ``fanout=<group id>`` joins ``PACKET_FANOUT`` in hash mode (with defragmentation, so all
  fragments of a datagram reach the same worker): several processes share an interface flow by flow.
* VLAN tags stripped by the NIC (``TP_STATUS_VLAN_VALID``) are put back into the frame, so the
  decoder sees what was on the wire.
* A socket error (ENETDOWN: the interface went down, flapped or was removed) is read on the idle
  wait, counted (``capture.socket_errors``) and logged; poll would otherwise report it again and
  again. The kernel re-attaches the socket when the interface is up again.
* ``kernel_stats()`` reads ``PACKET_STATISTICS`` (which resets on every read) and keeps running
  totals per interface: ``(packets, drops)``, where packets counts every frame that reached the
  socket, drops included.

Running without root: the sensor needs CAP_NET_RAW (sockets) and CAP_NET_ADMIN (promiscuous
mode). Either grant them to the interpreter once::

    setcap cap_net_raw,cap_net_admin+eip "$(readlink -f "$(command -v python3)")"

(every program run by that interpreter gets them: prefer a dedicated virtualenv copy), or run
the sensor as a systemd service with::

    [Service]
    User=leakmon
    AmbientCapabilities=CAP_NET_RAW CAP_NET_ADMIN
    CapabilityBoundingSet=CAP_NET_RAW CAP_NET_ADMIN
"""

from __future__ import annotations

import ctypes
import errno
import logging
import mmap
import select
import socket
import struct
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from monitor.capture.bpf import BpfProgram
from monitor.config import CaptureConfig
from monitor.errors import LeakmonError
from monitor.model import LINKTYPE_ETHERNET, RawPacket
from monitor.stats import Stats

log = logging.getLogger("leakmon.capture")

SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_MR_PROMISC = 1
PACKET_RX_RING = 5
PACKET_STATISTICS = 6
PACKET_VERSION = 10
PACKET_FANOUT = 18
PACKET_FANOUT_HASH = 0
PACKET_FANOUT_FLAG_DEFRAG = 0x8000
TPACKET_V3 = 2
SO_ATTACH_FILTER = 26
ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4

TP_STATUS_KERNEL = 0
TP_STATUS_USER = 1
TP_STATUS_VLAN_VALID = 1 << 4
TP_STATUS_VLAN_TPID_VALID = 1 << 6

# struct tpacket_block_desc: version, offset_to_priv, then tpacket_hdr_v1 (block_status, num_pkts,
# offset_to_first_pkt, ...).
_BLOCK_STATUS = 8
_block_hdr = struct.Struct("=III").unpack_from  # block_status, num_pkts, offset_to_first_pkt (at +8)
# struct tpacket3_hdr: next_offset, sec, nsec, snaplen, len, status, mac, net, rxhash, vlan_tci, vlan_tpid.
_pkt_hdr = struct.Struct("=IIIIIIHHIIH").unpack_from
_TPACKET3_HDRLEN = 48  # TPACKET_ALIGN(sizeof(struct tpacket3_hdr)); struct sockaddr_ll follows
_SLL_PKTTYPE = _TPACKET3_HDRLEN + 10

IDLE_TICK = 0.2  # seconds: an idle iterator yields None at least this often
# poll flags that report the socket, not a block: a pending error (ENETDOWN when the interface
# goes down, flaps or is removed) stays reported until SO_ERROR reads it.
_POLL_TROUBLE = select.POLLERR | select.POLLHUP | select.POLLNVAL

# LiveCapture.walk's in-place frame handler, Pipeline.process_frame's leading arguments:
# (buf, start, caplen, wire_len, ts, pcap_cnt, iface) -> handled. buf is the ring's mmap (Any:
# process_frame annotates bytes, and only slices and unpack_from's it, which an mmap serves alike).
FrameHandler = Callable[[Any, int, int, int, float, int, str], bool]
PacketHandler = Callable[[RawPacket], None]


class LiveCaptureError(LeakmonError):
    """An interface cannot be opened (missing, or no CAP_NET_RAW); the message says what to do."""


class _Ring:
    """One interface: socket, mmap'ed ring, next block to read, running kernel counters."""

    def __init__(self, iface: str, cfg: CaptureConfig, prog: BpfProgram | None, fanout: int | None) -> None:
        self.iface = iface
        self.block_size = _page_align(cfg.ring_block_size)
        self.blocks = cfg.ring_blocks
        self.next_block = 0
        self.packets = 0
        self.drops = 0
        try:
            self.ifindex = socket.if_nametoindex(iface)
        except OSError:
            raise LiveCaptureError(f"capture interface {iface!r} does not exist") from None
        self.is_loopback = _is_loopback(iface)
        try:
            # Protocol 0: nothing is queued until bind(), after the filter is in place.
            self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        except PermissionError:
            raise LiveCaptureError(
                f"cannot open a packet socket on {iface}: needs root or CAP_NET_RAW "
                "(setcap cap_net_raw,cap_net_admin+eip on the python binary, or systemd AmbientCapabilities)"
            ) from None
        try:
            self._setup(cfg, prog, fanout)
        except OSError as exc:
            self.sock.close()
            raise LiveCaptureError(f"cannot set up capture on {iface}: {exc.strerror or exc}") from None

    def _setup(self, cfg: CaptureConfig, prog: BpfProgram | None, fanout: int | None) -> None:
        sock = self.sock
        if prog is not None:
            insns = prog.instructions()
            cbuf = ctypes.create_string_buffer(insns, len(insns))  # the kernel copies it during the call
            fprog = struct.pack("@HP", len(prog), ctypes.addressof(cbuf))
            sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
        sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V3)
        frame_size = 2048  # V3 frames are variable-sized; this only sets the nominal frame count
        frames = self.block_size // frame_size * self.blocks
        timeout_ms = max(1, int(cfg.ring_block_timeout * 1000))
        req = struct.pack("=7I", self.block_size, self.blocks, frame_size, frames, timeout_ms, 0, 0)
        sock.setsockopt(SOL_PACKET, PACKET_RX_RING, req)
        self.ring = mmap.mmap(sock.fileno(), self.block_size * self.blocks, mmap.MAP_SHARED,
                              mmap.PROT_READ | mmap.PROT_WRITE)
        sock.bind((self.iface, ETH_P_ALL))
        if cfg.promiscuous:
            mreq = struct.pack("iHH8s", self.ifindex, PACKET_MR_PROMISC, 0, b"")
            sock.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, mreq)
        if fanout is not None:
            # The defrag flag sets bit 31: pack unsigned (a Python int argument must fit a signed int).
            arg = (fanout & 0xFFFF) | ((PACKET_FANOUT_HASH | PACKET_FANOUT_FLAG_DEFRAG) << 16)
            sock.setsockopt(SOL_PACKET, PACKET_FANOUT, struct.pack("=I", arg))
        sock.setblocking(False)

    def read_stats(self) -> tuple[int, int]:
        try:
            raw = self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 12)
        except OSError:
            return self.packets, self.drops
        packets, drops, _freeze = struct.unpack("=III", raw)
        self.packets += packets
        self.drops += drops
        return self.packets, self.drops

    def close(self) -> None:
        try:
            self.ring.close()
        except (AttributeError, BufferError, ValueError):
            pass
        self.sock.close()


class LiveCapture:
    """Iterate to receive RawPackets from every interface; ``None`` means "idle, run your timers"."""

    def __init__(self, ifaces: Sequence[str], capture_cfg: CaptureConfig, stats: Stats,
                 fanout: int | None = None) -> None:
        if not ifaces:
            raise LiveCaptureError("no capture interface given")
        self.stats = stats
        self.snaplen = capture_cfg.snaplen
        self.rings: list[_Ring] = []
        self._stopping = False
        self._cnt = 0
        try:
            for iface in dict.fromkeys(ifaces):
                prog = None
                if capture_cfg.bpf:
                    if not _exists(iface):
                        raise LiveCaptureError(f"capture interface {iface!r} does not exist")
                    prog = BpfProgram(capture_cfg.bpf, LINKTYPE_ETHERNET, capture_cfg.snaplen, iface=iface)
                self.rings.append(_Ring(iface, capture_cfg, prog, fanout))
        except BaseException:
            self.close()
            raise
        self._poll = select.poll()
        self._by_fd: dict[int, _Ring] = {}
        for ring in self.rings:
            fd = ring.sock.fileno()
            self._poll.register(fd, select.POLLIN | select.POLLERR)
            self._by_fd[fd] = ring

    def __iter__(self) -> Iterator[RawPacket | None]:
        rings = self.rings
        last_yield = time.monotonic()
        while not self._stopping:
            got = 0
            for ring in rings:
                for raw in self._drain(ring):
                    got += 1
                    yield raw
            if self._stopping:
                break
            if got:
                last_yield = time.monotonic()
                continue
            if self._idle_until_ready(last_yield):
                last_yield = time.monotonic()
                yield None

    def _idle_until_ready(self, last_yield: float) -> bool:
        """Poll the sockets until a ring has a retired block or IDLE_TICK has passed since
        ``last_yield``; True when none has one (the caller yields an idle tick).

        Whether a block is ready is read from the ring: poll only wakes us. A wakeup without a
        block must not send the caller straight back to poll, which would return at once again
        and spin a core for the rest of every tick (reproduced by setting the capture interface
        down and up: the sensor took every frame, then stayed at 100 % CPU until stopped). A socket
        error is therefore taken (read, counted, logged); any other such wakeup waits out the
        tick.
        """
        wait = IDLE_TICK - (time.monotonic() - last_yield)
        if wait <= 0:
            return True
        events = self._poll.poll(int(wait * 1000))
        if not events:
            return True
        if any(_block_ready(ring) for ring in self.rings):
            return False
        if not self._take_socket_errors(events):
            time.sleep(max(0.0, IDLE_TICK - (time.monotonic() - last_yield)))
        return True

    def _take_socket_errors(self, events: list[tuple[int, int]]) -> bool:
        """Read (which clears) the pending error of each socket poll flagged; True if one had one.

        ENETDOWN means the interface went down or was removed: the kernel re-attaches the socket
        when it comes back up (capture goes on); a removed interface stays silent, which the
        coverage record reports as a stalled capture.
        """
        taken = False
        for fd, flags in events:
            ring = self._by_fd.get(fd)
            if ring is None or not flags & _POLL_TROUBLE:
                continue
            try:
                err = ring.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            except OSError:
                continue  # not a live socket (closed): nothing to take; the caller waits out the tick
            if err:
                taken = True
                self.stats.incr("capture.socket_errors", iface=ring.iface)
                log.warning("capture on %s: socket error %s: %s", ring.iface, errno.errorcode.get(err, err),
                            "the interface went down; capture resumes when it is up again" if _exists(ring.iface)
                            else "the interface was removed; nothing more is captured on it")
        return taken

    def _drain(self, ring: _Ring) -> Iterator[RawPacket]:
        """Every packet of every block the kernel has handed over, oldest block first."""
        mm = ring.ring
        bsize = ring.block_size
        iface = ring.iface
        skip_outgoing = ring.is_loopback  # lo shows each packet twice (out and in)
        while True:
            base = ring.next_block * bsize
            status, num, first = _block_hdr(mm, base + _BLOCK_STATUS)
            if not status & TP_STATUS_USER:
                return
            off = base + first
            for _ in range(num):
                nxt, sec, nsec, snaplen, wire, pstatus, mac, _net, _hash, tci, tpid = _pkt_hdr(mm, off)
                if not (skip_outgoing and mm[off + _SLL_PKTTYPE] == PACKET_OUTGOING):
                    start = off + mac
                    if snaplen > self.snaplen:
                        snaplen = self.snaplen
                    data = mm[start:start + snaplen]
                    if pstatus & TP_STATUS_VLAN_VALID and len(data) >= 12:
                        # The NIC stripped the tag into the descriptor; put it back where it was.
                        tag_tpid = tpid if pstatus & TP_STATUS_VLAN_TPID_VALID and tpid else 0x8100
                        data = data[:12] + struct.pack("!HH", tag_tpid, tci & 0xFFFF) + data[12:]
                        wire += 4
                    self._cnt += 1
                    yield RawPacket(sec + nsec * 1e-9, LINKTYPE_ETHERNET, data, self._cnt, iface,
                                    wire if wire >= len(data) else len(data))
                if not nxt:
                    break
                off += nxt
            # Hand the block back to the kernel, then move on.
            mm[base + _BLOCK_STATUS:base + _BLOCK_STATUS + 4] = b"\0\0\0\0"
            ring.next_block = (ring.next_block + 1) % ring.blocks

    def walk(self, frame: FrameHandler, decoded: PacketHandler, whole: PacketHandler) -> Iterator[int]:
        """The same frames as iterating, in the same order and numbering, handed to callbacks.

        Each frame is offered in place as ``frame(ring_mmap, start, caplen, wire_len, ts,
        pcap_cnt, iface)`` (Pipeline.process_frame); when that returns False, ``decoded`` gets
        the frame's RawPacket (Pipeline.process_decoded). Frames the fast path must not see
        get their RawPacket straight to ``whole`` (Pipeline.process): a VLAN tag stripped into
        the descriptor (the frame is rebuilt with it, as iteration does) and a zero timestamp
        (the caller may substitute its clock). The handler may slice the ring (slices of an
        mmap are bytes copies) but must keep no view of it: the block goes back to the kernel
        right after its walk. Yields after every block the number of frames it held, and 0
        where iteration yields None (idle: run your timers).
        """
        rings = self.rings
        last_yield = time.monotonic()
        while not self._stopping:
            got = 0
            for ring in rings:
                while not self._stopping:
                    num = self._walk_block(ring, frame, decoded, whole)
                    if num < 0:
                        break
                    got += 1
                    yield num
            if self._stopping:
                break
            if got:
                last_yield = time.monotonic()
                continue
            if self._idle_until_ready(last_yield):
                last_yield = time.monotonic()
                yield 0

    def _walk_block(self, ring: _Ring, frame: FrameHandler, decoded: PacketHandler, whole: PacketHandler) -> int:
        """Walk the ring's next block if the kernel has handed it over (-1 if not), then hand it
        back. Every frame is built exactly as :meth:`_drain` builds it, but only when needed."""
        mm = ring.ring
        base = ring.next_block * ring.block_size
        status, num, first = _block_hdr(mm, base + _BLOCK_STATUS)
        if not status & TP_STATUS_USER:
            return -1
        iface = ring.iface
        skip_outgoing = ring.is_loopback  # lo shows each packet twice (out and in)
        cap = self.snaplen
        end = len(mm)
        cnt = self._cnt
        off = base + first
        for _ in range(num):
            nxt, sec, nsec, snaplen, wire, pstatus, mac, _net, _hash, tci, tpid = _pkt_hdr(mm, off)
            if not (skip_outgoing and mm[off + _SLL_PKTTYPE] == PACKET_OUTGOING):
                start = off + mac
                if snaplen > cap:
                    snaplen = cap
                # len(mm[start:start + snaplen]) without the slice (a slice stops at the map's end)
                n = snaplen if start + snaplen <= end else max(0, end - start)
                ts = sec + nsec * 1e-9
                cnt += 1
                self._cnt = cnt
                if pstatus & TP_STATUS_VLAN_VALID or not ts:
                    data = mm[start:start + snaplen]
                    if pstatus & TP_STATUS_VLAN_VALID and n >= 12:
                        tag_tpid = tpid if pstatus & TP_STATUS_VLAN_TPID_VALID and tpid else 0x8100
                        data = data[:12] + struct.pack("!HH", tag_tpid, tci & 0xFFFF) + data[12:]
                        wire += 4
                        n += 4
                    whole(RawPacket(ts, LINKTYPE_ETHERNET, data, cnt, iface, wire if wire >= n else n))
                else:
                    if wire < n:
                        wire = n
                    if not frame(mm, start, n, wire, ts, cnt, iface):
                        decoded(RawPacket(ts, LINKTYPE_ETHERNET, mm[start:start + n], cnt, iface, wire))
            if not nxt:
                break
            off += nxt
        # Hand the block back to the kernel (nothing holds a view of it), then move on.
        mm[base + _BLOCK_STATUS:base + _BLOCK_STATUS + 4] = b"\0\0\0\0"
        ring.next_block = (ring.next_block + 1) % ring.blocks
        return num

    def kernel_stats(self) -> dict[str, tuple[int, int]]:
        """Running (packets, drops) per interface since the capture started (also set as gauges)."""
        out = {ring.iface: ring.read_stats() for ring in self.rings}
        for iface, (packets, drops) in out.items():
            self.stats.set("capture.kernel_packets", packets, iface=iface)
            self.stats.set("capture.kernel_drops", drops, iface=iface)
        return out

    def stop(self) -> None:
        """Make the iterator end at its next step (safe from a signal handler)."""
        self._stopping = True

    def close(self) -> None:
        self._stopping = True
        for ring in self.rings:
            ring.close()
        self.rings = []

    def __enter__(self) -> LiveCapture:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _block_ready(ring: _Ring) -> bool:
    """The kernel has handed over the ring's next block (the one a walk takes next)."""
    status, _num, _first = _block_hdr(ring.ring, ring.next_block * ring.block_size + _BLOCK_STATUS)
    return bool(status & TP_STATUS_USER)


def _exists(iface: str) -> bool:
    try:
        socket.if_nametoindex(iface)
        return True
    except OSError:
        return False


def _page_align(n: int) -> int:
    page = mmap.PAGESIZE
    n = max(n, 128 * 1024)
    return (n + page - 1) // page * page


def _is_loopback(iface: str) -> bool:
    try:
        with open(f"/sys/class/net/{iface}/type") as f:
            return f.read().strip() == "772"  # ARPHRD_LOOPBACK
    except OSError:
        return iface == "lo"

