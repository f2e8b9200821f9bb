"""The public regression corpus through the real capture -> decode -> flow -> reassembly stages.

Expected names, sizes, SHA-256 and states are the upstream expectations quoted in
../shared/corpus/README.md (Suricata test.yaml, Zeek baselines, Arkime).
"""

from __future__ import annotations

import re

import pytest

from alerts.schema import validate_lines
from tests.conftest import CORPUS, corpus
from tests.monitor.applayer.replay import eve_lines, replay

EICAR = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
EICAR_SHA = "275a021bbfb6489e54d471899f7db9d1663fc695ec2fe2a2c4538aabf651fd0f"

# capture -> [(file name, size, sha256 or None, state)] that must be among the files.
FILES = {
    "suricata-verify/http-post-file/input.pcap": [
        ("/api/v4/uploads/is8j4b6s7i839eo38axwmx5pnr", 68, EICAR_SHA, "CLOSED")],
    "suricata-verify/file-match-crossed/http-multipart-post.pcap": [
        ("titi.txt", 25, "c345c434702129224a0a3e89810a7ed2556718221c0d36fdb7e52b93fa732b00", "CLOSED"),
        ("toto.txt", 24, "0605686b5f3a54d2fe07b3b6ed039779911f43ff079d7ff6fecbf4f75bf5ee10", "CLOSED")],
    "suricata-verify/filestore-dont/input.pcap": [
        ("/first", 2048, "eb076a2ec6ced9ee2e823e098446513cf5b2bb60fbcb04e6c85dc23dedaa414a", "CLOSED")],
    "suricata-verify/issue-3703/input.pcap": [
        ("/467659.pdf", 9952, "02f43016d07812f881dc1ccee724f95682016ff00c7ee6b2c856d4d693ce3fa5", "CLOSED")],
    "suricata-verify/bug-3286-01-no-evasion/without_evasion.pcap": [
        ("/", 14, "686b7feefc04ada1236ecfce1ff03e608e2fea01cb723ffeef0c870df1c91ead", "CLOSED")],
    "suricata-verify/http-brotli-ce/input.pcap": [("f.txt", 121, None, "CLOSED"), ("f.txt", 1743, None, "CLOSED")],
    "suricata-verify/filemd5/target.pcap": [
        ("/test", 15, "91751cee0a1ab8414400238a761411daa29643ab4b8243e9a91649e25be53ada", "CLOSED")],
    "zeek/http/post.pcap": [
        ("/post", 11, "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9", "CLOSED"),
        ("/post", 366, "8eb24c16df7cb45cb6a1790b0d26ad2571f754228d0ac111b3ac59adbfecbeb8", "CLOSED")],
    "zeek/http/multipart.pcap": [
        ("", 4, "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", "CLOSED"),
        ("", 5, "60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752", "CLOSED"),
        ("", 5, "fd61a03af4f77d870fc21e05e7e80678095c92d808cfb3b5c279ee04c74aca13", "CLOSED"),
        ("/post", 465, "dd485ecf240e12807516b0a27718fc3ab9a17c1158a452967343c98cefba07a0", "CLOSED")],
    "zeek/http/multipart-form-data.pcap": [
        ("test.txt", 584, "4f61a5b02d09e81bc12eca393f596bd8d04e781d6c71069d426ca8ac8b3463bf", "CLOSED")],
    "zeek/http/get-gzip.pcap": [
        ("/gzip", 197, "202b775be087f5af98e95120e42769a9b3488f84c5aa79c4f4c1093d348f849c", "CLOSED")],
    "zeek/http/x-gzip.pcap": [
        ("/", 19, "e62e2e4e455ae0f61ebc56102417cd415f6994222da9fd0ae01935a1b6fa2ad3", "CLOSED")],
    "zeek/http/http-filename.pcap": [("test.json", 191, None, "CLOSED")],
    "zeek/http/entity_gap.pcap": [("/download/CHANGES.bro-aux.txt", 4705, None, "TRUNCATED")],
    "zeek/http/putty-upload.pcap": [("putty.exe", 81758, None, "TRUNCATED")],
    "zeek/http-vlan-0.pcap": [
        ("/download/CHANGES.bro-aux.txt", 4705, "4e7c7ef0984119447e743e3ec77e1de52713e345cde03fe7df753a35849bed18", "CLOSED")],
    "zeek/http-qinq-0.pcap": [
        ("/download/CHANGES.bro-aux.txt", 4705, "4e7c7ef0984119447e743e3ec77e1de52713e345cde03fe7df753a35849bed18", "CLOSED")],
    "zeek/ipv6-http-atomic-frag.pcap": [
        ("/bad.html", 88, "0b1a593f5af649e0fa4f94b003d93300b75349223b0a3f4ffedd4066bea7ad29", "CLOSED")],
    "arkime/http-content-gzip.pcap": [
        ("/crossdomain.xml", 272, "67f737adf804542ac15aedee7014ee7aee8f9ae2bd345fb5fa56a86f008a2b1e", "CLOSED")],
    "arkime/http-content-zip.pcap": [
        (None, 310, "61479904e443b354d4427a51b990c696f731e341e4c63328e07c1a92658ba591", "CLOSED")],
    "arkime/http-post-upload.pcap": [
        ("123.doc(5).exe", 6, "8d969eef6ecad3c29a3a629280e686cf0c3f5d5a86aff3ca12020c923adc6c92", "CLOSED")],
    "arkime/v6-http.pcap": [
        (None, 2121, "c1c2b153153e166250d632e461b5a33177678e89d2ab8bc900ecd49e197884cb", "CLOSED")],
}


@pytest.mark.parametrize("rel", sorted(FILES))
def test_corpus_files(rel: str) -> None:
    r = replay(corpus(rel))
    got = [(f.name, f.size, f.sha256, f.state) for f in r.files]
    for name, size, digest, state in FILES[rel]:
        hits = [g for g in got if (name is None or g[0] == name) and g[1] == size and g[3] == state
                and (digest is None or g[2] == digest)]
        assert hits, f"{rel}: no file {(name, size, digest, state)} in {got}"
    validate_lines(eve_lines(r.contexts))


def test_gap_simple_two_closed_one_truncated() -> None:
    r = replay(corpus("suricata-verify/http-gap-simple/input.pcap"))
    assert sorted((f.size, f.state, f.gaps) for f in r.files) == [
        (14, "CLOSED", False), (14, "CLOSED", False), (70, "TRUNCATED", True)]
    assert [(b["http"]["url"], b["http"]["status"]) for b in r.events("http")] == [("/1", 200), ("/2", 200), ("/3", 200)]


def test_decoded_bodies_are_inspected() -> None:
    r = replay(corpus("suricata-verify/http-urldecode-body/input.pcap"))
    assert [i.data for i in r.inspected if i.where == "http.request.body > form"] == [b"mail=test@oisf.net"]
    r = replay(corpus("suricata-verify/http-post-data-decompression/input.pcap"))
    req = [f for f in r.files if f.source == "http.request.body"][0]
    assert b"name" in (req.content() or b"")
    r = replay(corpus("suricata-verify/http-encoding-gzip-uncompressed/input.pcap"))
    body = [f for f in r.files if f.source == "http.request.body"][0].content() or b""
    assert b"sdk_version" in body and "http.content_encoding.passthrough" in r.anomalies
    r = replay(corpus("suricata-verify/http-ipv6/input.pcap"))
    assert r.events("http")[0]["http"]["hostname"] == "[::1]" and r.anomalies == []
    r = replay(corpus("suricata-verify/http-chunked/input.pcap"))
    assert r.events("http")[0]["http"]["http_method"] == "HEAD"


VARIANTS = {
    "variant-01-chunk_2pow64_overflow": "http.chunk_size_overflow",
    "variant-02-cl_uint64max": "http.content_length_overflow",
    "variant-03-cl_negative": "http.content_length_invalid",
    "variant-04-te_cl_desync": "http.te_and_cl",
    "variant-07-expect_100_cl0": None,
    "variant-08-leading_zeros": None,
    "variant-09-te_obs_fold": "http.obs_fold",
    "variant-10-multi_value_te": "http.te_chunked_not_last",
}


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_zeek_261_smuggling_variants(name: str) -> None:
    r = replay(corpus(f"zeek/http/261/{name}.pcap"))
    assert r.events("http"), "the request must still be logged"
    if VARIANTS[name]:
        assert VARIANTS[name] in r.anomalies
    assert all(not f.is_open for f in r.files)
    validate_lines(eve_lines(r.contexts))


def evader_cases() -> list[str]:
    base = CORPUS / "suricata-verify" / "http-evader"
    return sorted(p.name for p in base.glob("http-evader-*")) if base.exists() else []


def test_http_evader_all_decode_to_eicar() -> None:
    cases = evader_cases()
    if not cases:
        pytest.skip("http-evader corpus not present")
    failed = []
    for case in cases:
        d = CORPUS / "suricata-verify" / "http-evader" / case
        m = re.search(r"fileinfo\.filename: (.*)", (d / "test.yaml").read_text())
        want = m.group(1).strip() if m else None
        r = replay(d / "input.pcap")
        hits = [f for f in r.files if (want is None or f.name == want)
                and EICAR in bytes(f.buffer or b"")]
        if len(hits) != 1 or r.events("http")[0]["http"].get("hostname") != "evader.example.com":
            failed.append(case)
    assert len(cases) == 502
    assert failed == [], f"{502 - len(failed)}/502 pass; failing: {failed}"
