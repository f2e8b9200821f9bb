"""BPF filter expressions compiled by libpcap (through ctypes), for replay and for the kernel.

libpcap is the reference compiler of the tcpdump filter language, so replay and live capture
accept exactly what ``tcpdump`` accepts. A compiled :class:`BpfProgram` either filters frames in
user space (``pcap_offline_filter``, replay) or hands its instructions to the kernel
(``SO_ATTACH_FILTER``, live capture; see :mod:`monitor.capture.afpacket`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import struct
import threading

from monitor.errors import LeakmonError

PCAP_NETMASK_UNKNOWN = 0xFFFFFFFF
_MAX_SNAPLEN = 262144


class BpfError(LeakmonError):
    """The expression does not compile (or libpcap is missing); the message says why."""


class _BpfProgram(ctypes.Structure):
    _fields_ = [("bf_len", ctypes.c_uint), ("bf_insns", ctypes.c_void_p)]


class _Timeval(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long)]


class _PktHdr(ctypes.Structure):
    _fields_ = [("ts", _Timeval), ("caplen", ctypes.c_uint32), ("len", ctypes.c_uint32)]


_lib: ctypes.CDLL | None = None
# pcap_compile is not thread-safe in old libpcap versions.
_compile_lock = threading.Lock()


def _libpcap() -> ctypes.CDLL:
    global _lib
    if _lib is None:
        names = ["libpcap.so.0.8", "libpcap.so.1", ctypes.util.find_library("pcap") or "libpcap.so"]
        last: OSError | None = None
        for name in names:
            try:
                lib = ctypes.CDLL(name)
                break
            except OSError as exc:
                last = exc
        else:
            raise BpfError(f"BPF filters need libpcap (apt install libpcap0.8): {last}")
        lib.pcap_open_dead.restype = ctypes.c_void_p
        lib.pcap_open_dead.argtypes = [ctypes.c_int, ctypes.c_int]
        lib.pcap_compile.restype = ctypes.c_int
        lib.pcap_compile.argtypes = [ctypes.c_void_p, ctypes.POINTER(_BpfProgram), ctypes.c_char_p,
                                     ctypes.c_int, ctypes.c_uint32]
        lib.pcap_geterr.restype = ctypes.c_char_p
        lib.pcap_geterr.argtypes = [ctypes.c_void_p]
        lib.pcap_close.argtypes = [ctypes.c_void_p]
        lib.pcap_create.restype = ctypes.c_void_p
        lib.pcap_create.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
        lib.pcap_set_snaplen.argtypes = [ctypes.c_void_p, ctypes.c_int]
        lib.pcap_set_buffer_size.argtypes = [ctypes.c_void_p, ctypes.c_int]
        lib.pcap_activate.argtypes = [ctypes.c_void_p]
        lib.pcap_freecode.argtypes = [ctypes.POINTER(_BpfProgram)]
        lib.pcap_offline_filter.restype = ctypes.c_int
        lib.pcap_offline_filter.argtypes = [ctypes.POINTER(_BpfProgram), ctypes.POINTER(_PktHdr), ctypes.c_char_p]
        _lib = lib
    return _lib


def _live_handle(lib: ctypes.CDLL, iface: str, snaplen: int) -> int | None:
    errbuf = ctypes.create_string_buffer(256)
    handle = lib.pcap_create(iface.encode(), errbuf)
    if not handle:
        return None
    lib.pcap_set_snaplen(handle, snaplen)
    lib.pcap_set_buffer_size(handle, 1 << 18)  # short-lived: only compiles
    if lib.pcap_activate(handle) < 0:
        lib.pcap_close(handle)
        return None
    return int(handle)


class BpfProgram:
    """One expression compiled for one link type."""

    def __init__(self, expression: str, linktype: int, snaplen: int = _MAX_SNAPLEN, *, iface: str = "") -> None:
        """Compile for a link type; with ``iface``, compile as for a live capture on that interface.

        On Linux the kernel moves the outer VLAN tag out of the frame before a socket filter
        runs; libpcap only compiles ``vlan`` to the matching kernel extension loads for a live
        handle, so a kernel filter must come from one (needs CAP_NET_RAW, as capture does).
        """
        lib = _libpcap()
        self.expression = expression
        self.linktype = linktype
        self._prog = _BpfProgram()
        self._hdr = _PktHdr()
        with _compile_lock:
            handle = _live_handle(lib, iface, snaplen) if iface else None
            if not handle:
                handle = lib.pcap_open_dead(linktype, snaplen)
            if not handle:
                raise BpfError(f"libpcap cannot open a handle for link type {linktype}")
            try:
                rc = lib.pcap_compile(handle, ctypes.byref(self._prog), expression.encode(), 1, PCAP_NETMASK_UNKNOWN)
                if rc != 0:
                    msg = (lib.pcap_geterr(handle) or b"syntax error").decode(errors="replace")
                    raise BpfError(f"bad BPF filter {expression!r} (link type {linktype}): {msg}")
            finally:
                lib.pcap_close(handle)
        self._filter = lib.pcap_offline_filter
        self._hdr_ref = ctypes.byref(self._hdr)
        self._prog_ref = ctypes.byref(self._prog)

    def matches(self, data: bytes, wire_len: int = 0) -> bool:
        """True when the frame passes the filter."""
        hdr = self._hdr
        hdr.caplen = len(data)
        hdr.len = wire_len if wire_len >= len(data) else len(data)
        return self._filter(self._prog_ref, self._hdr_ref, data) != 0

    def instructions(self) -> bytes:
        """The program as an array of ``struct sock_filter`` (code u16, jt u8, jf u8, k u32), native order.

        libpcap's ``struct bpf_insn`` has the same layout, so the bytes go to the kernel as they are.
        """
        n = self._prog.bf_len
        return ctypes.string_at(self._prog.bf_insns, n * struct.calcsize("HBBI"))

    def __len__(self) -> int:
        return int(self._prog.bf_len)

    def __del__(self) -> None:
        lib = _lib
        prog = getattr(self, "_prog", None)
        if lib is not None and prog is not None and prog.bf_insns:
            lib.pcap_freecode(ctypes.byref(prog))
