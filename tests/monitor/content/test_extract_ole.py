"""OLE2 record decoders on hand-built streams (PowerPoint records, BIFF SST across CONTINUE)."""

from __future__ import annotations

import struct

from monitor.config import ContentConfig
from monitor.content.budget import Budget
from monitor.content.items import Text
from monitor.content.ole2 import _excel, _powerpoint
from monitor.stats import Stats
from tests.monitor.content.helpers import MARKER


def budget() -> Budget:
    return Budget(ContentConfig(), Stats(), 1000)


def rec(ver_inst: int, rtype: int, body: bytes) -> bytes:
    return struct.pack("<HHI", ver_inst, rtype, len(body)) + body


def test_powerpoint_text_atoms_inside_containers():
    slide = rec(0x000F, 0x03F0, rec(0, 0x0FA0, f"{MARKER}\r二行目".encode("utf-16-le"))
                + rec(0, 0x0FA8, b"ascii bytes") + rec(0, 0x1234, b"\x00" * 7))
    items = list(_powerpoint(rec(0x000F, 0x03E8, slide), budget()))
    assert items == [Text(f"{MARKER}\n二行目\nascii bytes", "ole:PowerPoint Document")]


def test_biff_sst_string_split_across_continue_with_new_option_byte():
    s1 = "レーダー"
    s2 = MARKER
    # string 2 starts UTF-16 in the SST record and its last 3 characters move to CONTINUE,
    # which restarts with an option byte (0x01 = UTF-16)
    sst = struct.pack("<II", 2, 2) + struct.pack("<HB", len(s1), 1) + s1.encode("utf-16-le")
    sst += struct.pack("<HB", len(s2), 1) + s2[:4].encode("utf-16-le")
    cont = b"\x01" + s2[4:].encode("utf-16-le")
    wb = (struct.pack("<HH", 0x00FC, len(sst)) + sst + struct.pack("<HH", 0x003C, len(cont)) + cont
          + struct.pack("<HH", 0x000A, 0))
    items = list(_excel(wb, budget()))
    assert items == [Text(f"{s1}\n{s2}", "ole:Workbook")]


def test_biff_filepass_is_encrypted():
    b = budget()
    items = list(_excel(struct.pack("<HH", 0x002F, 4) + b"\x01\x00\x01\x00", b))
    assert [i.kind for i in items] == ["encrypted"]  # type: ignore[union-attr]
    assert b.stats.get("content.encrypted", format="xls") == 1
