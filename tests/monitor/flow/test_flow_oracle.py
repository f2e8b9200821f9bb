"""The independent oracle: for public regression captures and our samples, the reassembled
client->server and server->client streams equal ``tshark -q -z follow,tcp,raw,N`` (gaps
included, as tshark marks them) and the per-flow packet/byte counts equal tshark's
(``conv,tcp`` and frame lengths per ``tcp.stream``). Plus the Suricata expectations of the
overlap, gap, handshake and urgent-data cases in the corpus README.

Documented exceptions (each has its own test below):
- urgent data: tshark keeps the urgent byte inline; our default ``oob`` removes it.
- zeek/tcp/reassembly.pcap: the decoder drops 5 IPv4 packets whose total length exceeds the
  frame (``decoder.ipv4.trunc_pkt``), so tshark follows a copy without them; tshark waits
  forever for a hole (we compare with ``gap_wait: 1h``); and where retransmissions carry
  different bytes tshark's follow sometimes shows the later copy, which we report as the
  ``other`` version of that overlap.
"""

from __future__ import annotations

import subprocess
import tracemalloc

import pytest
from stream_harness import HAVE_TSHARK, compare_counts, compare_streams, gap_marker, run, stream_config

from monitor.model import TO_CLIENT, TO_SERVER
from tests.conftest import PCAPS

pytestmark = [pytest.mark.tshark, pytest.mark.skipif(not HAVE_TSHARK, reason="tshark not installed")]

CORPUS_CASES = [
    "suricata-verify/eve-overlap-payload-01/tcp-overlap.pcap",
    "suricata-verify/eve-payload-04-partial-overlap/tcp-overlap2.pcap",
    "suricata-verify/eve-payload-05-tcp-data-gap/tcp-simple-gap2.pcap",
    "suricata-verify/tcp-split-handshake-01-4whs/split-handshake-4whs.pcap",
    "suricata-verify/bug-3286-01-no-evasion/without_evasion.pcap",
    "suricata-verify/bug-3286-02-linux-evasion/with_evasion_linux.pcap",
    "suricata-verify/bug-3286-03-windows-evasion/with_evasion_windows.pcap",
    "suricata-verify/http-gap-simple/input.pcap",
    "suricata-verify/http-ipv6/input.pcap",
    "suricata-verify/http-range-file/input.pcap",
    "suricata-verify/issue-3703/input.pcap",
    "suricata-verify/bug-4877/input.pcap",
    "suricata-verify/smtp-rfc2231/input.pcap",
    "zeek/ftp/bigtransfer.pcap",
    "zeek/ftp/retr.pcap",
    "zeek/ftp/ipv6.pcap",
    "arkime/tcp-reassembly-synthetic.pcap",
]

SAMPLE_CASES = ["sample-leak-http.pcap", "ftp-ftplib.pcap", "mail-smtplib.pcap", "mail-bdat.pcap",
                "mail-starttls.pcap", "stream-evasions.pcap"]


@pytest.mark.parametrize("rel", CORPUS_CASES)
def test_corpus_streams_and_counts_equal_tshark(rel, corpus_path):
    pcap = corpus_path(rel)
    result = run(pcap)
    assert result.tcp(), "no TCP flow"
    assert compare_streams(pcap, result) == []
    assert compare_counts(pcap, result) == []


@pytest.mark.parametrize("name", SAMPLE_CASES)
def test_sample_streams_and_counts_equal_tshark(name):
    pcap = PCAPS / name
    if not pcap.exists():
        pytest.skip(f"{name} not generated")
    result = run(pcap)
    assert result.tcp()
    assert compare_streams(pcap, result) == []
    assert compare_counts(pcap, result) == []


# ------------------------------------------------------------------ Suricata expectations


def test_overlap_first_policy_keeps_good_and_reports_evil(corpus_path):
    r = run(corpus_path("suricata-verify/eve-overlap-payload-01/tcp-overlap.pcap")).one()
    assert bytes(r.data[TO_SERVER]) == b"GOOD"
    assert r.overlaps == [(TO_SERVER, 0, b"GOOD", b"EVIL")]
    assert r.anomalies == [(TO_SERVER, "stream.overlap_different_data")]


def test_overlap_old_linux_policy_keeps_evil(corpus_path):
    # The test's suricata.yaml puts server 2.2.2.2 under old-linux: the later segment wins.
    yaml_text = corpus_path("suricata-verify/eve-overlap-payload-02-policy-oldlinux/suricata.yaml").read_text()
    assert "old-linux" in yaml_text
    pcap = corpus_path("suricata-verify/eve-overlap-payload-02-policy-oldlinux/tcp-overlap.pcap")
    r = run(pcap, stream_config(overlap_policy="last")).one()
    assert bytes(r.data[TO_SERVER]) == b"EVIL"
    assert r.overlaps == [(TO_SERVER, 0, b"EVIL", b"GOOD")]


def test_partial_overlap_keeps_good(corpus_path):
    r = run(corpus_path("suricata-verify/eve-payload-04-partial-overlap/tcp-overlap2.pcap")).one()
    assert bytes(r.data[TO_SERVER]) == b"GOOD"
    assert r.overlaps == [(TO_SERVER, 1, b"OOD", b"XXX")]


def test_data_gap_is_very_gap_data(corpus_path):
    r = run(corpus_path("suricata-verify/eve-payload-05-tcp-data-gap/tcp-simple-gap2.pcap")).one()
    assert bytes(r.marked[TO_SERVER]) == b"VERY" + gap_marker(4) + b"DATA"
    assert r.gaps[TO_SERVER] == [4] and r.flow.gaps == 1
    assert b"GOOD" not in bytes(r.data[TO_SERVER])


def test_split_handshake_payload_is_seen(corpus_path):
    r = run(corpus_path("suricata-verify/tcp-split-handshake-01-4whs/split-handshake-4whs.pcap")).one()
    assert r.flow.addresses()[0] == "1.1.1.1"
    assert bytes(r.data[TO_SERVER]) == b"EVIL"


def test_urgent_byte_out_of_band_reads_malicious(corpus_path):
    pcap = corpus_path("suricata-verify/tcp-urgp-01-oob/tcp-urgent1.pcap")
    oob = run(pcap).one()
    assert bytes(oob.data[TO_SERVER]).startswith(b"GET /malicious HTTP/1.1\r\n")
    # tshark keeps urgent bytes inline: with the inline policy the streams are identical ...
    inline = run(pcap, stream_config(urgent_policy="inline"))
    assert compare_streams(pcap, inline) == []
    assert compare_counts(pcap, inline) == []
    # ... and the oob stream is that stream less the one urgent byte.
    full = bytes(inline.one().data[TO_SERVER])
    assert full[10:11] == b"X" and full[:10] + full[11:] == bytes(oob.data[TO_SERVER])
    assert bytes(oob.data[TO_CLIENT]) == bytes(inline.one().data[TO_CLIENT])


@pytest.mark.parametrize("rel", ["bug-3286-01-no-evasion/without_evasion.pcap",
                                 "bug-3286-02-linux-evasion/with_evasion_linux.pcap",
                                 "bug-3286-03-windows-evasion/with_evasion_windows.pcap"])
def test_timestamp_evasions_still_carry_the_body(rel, corpus_path):
    r = run(corpus_path("suricata-verify/" + rel)).one()
    body = bytes(r.data[TO_CLIENT])
    assert body.endswith(b"Content-Length: 14\r\n\r\nTHIS_IS_A_TEST") and body.count(b"THIS_IS_A_TEST") == 1


def test_sparse_multi_gigabyte_ftp_transfer_is_not_buffered(corpus_path):
    pcap = corpus_path("zeek/ftp/bigtransfer.pcap")
    tracemalloc.start()
    result = run(pcap)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 20 * 1024 * 1024
    data_flow = max(result.tcp(), key=lambda r: sum(r.gaps[TO_SERVER]) + sum(r.gaps[TO_CLIENT]))
    skipped = sum(data_flow.gaps[TO_SERVER]) + sum(data_flow.gaps[TO_CLIENT])
    assert skipped > 4_000_000_000  # offsets beyond 2**32: sequence numbers wrapped
    assert compare_streams(pcap, result) == []


def test_inconsistent_retransmissions_match_tshark_modulo_reported_overlaps(corpus_path, tmp_path):
    pcap = corpus_path("zeek/tcp/reassembly.pcap")
    result = run(pcap, stream_config(gap_wait=3600.0))
    dropped = result.stats.get("decoder.ipv4.trunc_pkt")
    follow = pcap
    if dropped:
        # Follow the same packets the decoder kept.
        frames = _frames_dropped_by_decoder(pcap)
        assert len(frames) == dropped == 5
        follow = tmp_path / "kept.pcap"
        keep = " and ".join(f"frame.number != {n}" for n in frames)
        subprocess.run(["tshark", "-r", str(pcap), "-Y", keep, "-w", str(follow)], check=True, capture_output=True)
    r = result.one()
    assert compare_counts(follow, result) == []
    assert compare_streams(follow, result, other_ok=True) == []
    # Zeek's rexmit_inconsistency: retransmitted bytes that differ from the original.
    assert len(r.overlaps) == 6 and all(kept != other for _, _, kept, other in r.overlaps)
    assert result.stats.get("stream.overlap_different_data") == 6


def _frames_dropped_by_decoder(pcap) -> list[int]:
    from monitor.capture.pcapfile import read_capture
    from monitor.config import default_config
    from monitor.decode.decoder import Decoder
    from monitor.stats import Stats

    stats = Stats()
    decoder = Decoder(default_config(), stats, lambda *a: None)
    return [raw.pcap_cnt for raw in read_capture(str(pcap), stats=stats) if decoder.decode(raw) is None]
