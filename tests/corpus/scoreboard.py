"""Print the corpus pass counts per area (for the README).

    python3 -m tests.corpus.scoreboard [-v] [--only SUBSTRING]

Replays every manifest entry of ../shared/corpus exactly as tests/corpus/test_corpus.py does and
prints ``N/M corpus captures pass`` per area and in total (an xfail counts as not passing),
plus the http-evader line. ``-v`` lists each failure with its reason.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from tests.corpus import harness

AREA_ORDER = ["http", "http-evader", "smtp", "ftp", "tcp", "defrag", "vlan", "ipv6", "content", "other"]
AREA_TITLES = {
    "http": "HTTP", "http-evader": "HTTP evader (one entry, 502 captures)", "smtp": "SMTP / MIME", "ftp": "FTP",
    "tcp": "TCP reassembly", "defrag": "IP defragmentation", "vlan": "VLAN", "ipv6": "IPv6",
    "content": "archives (zip)", "other": "other protocols (POP3, IMAP: robustness)",
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("-v", "--verbose", action="store_true")
    ap.add_argument("--only", default="", help="Only manifest entries whose path contains this")
    args = ap.parse_args(argv)
    if not harness.corpus_present():
        print(f"corpus not present at {harness.CORPUS}", file=sys.stderr)
        return 2
    cfg = harness.base_config()
    results: dict[str, list[harness.Outcome]] = defaultdict(list)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="leakmon-corpus-") as tmp:
        for i, (key, _entry, spec) in enumerate(harness.entries()):
            if args.only and args.only not in key:
                continue
            outcome = harness.run_entry(key, spec, Path(tmp) / str(i), cfg)
            results[outcome.area].append(outcome)
    total = passed = 0
    suricata = [0, 0]
    for area in sorted(results, key=lambda a: AREA_ORDER.index(a) if a in AREA_ORDER else 99):
        outs = results[area]
        ok = sum(o.passed for o in outs)
        total += len(outs)
        passed += ok
        print(f"{AREA_TITLES.get(area, area)}: {ok}/{len(outs)} corpus captures pass")
        for o in outs:
            if o.key.startswith("suricata-verify/"):
                suricata[0] += o.passed
                suricata[1] += 1
            if o.detail:
                print(f"  {o.detail}")
            if args.verbose and not o.passed:
                tag = "xfail" if o.xfail else "FAIL"
                print(f"  {tag} {o.key}: {'; '.join(o.failures)[:600]}")
                if o.xfail:
                    print(f"        ({o.xfail})")
    print(f"suricata-verify: {suricata[0]}/{suricata[1]} pass")
    print(f"total: {passed}/{total} corpus captures pass ({time.perf_counter() - t0:.1f} s)")
    return 0 if passed == total else 1


if __name__ == "__main__":
    raise SystemExit(main())
