#!/usr/bin/env python3
"""Summarise an Autobahn report directory written by kosoku.

Prints one line per case whose verdict is not OK (NON-STRICT, INFORMATIONAL,
UNIMPLEMENTED, FAILED), the totals per verdict, and exits 1 when any case FAILED,
was UNIMPLEMENTED or could not be run (ERROR). UNIMPLEMENTED counts as a failure in
every group: in 12 and 13 (permessage-deflate) it means compression was not agreed.

`--expect 12,13` also fails when the report has no case of one of those groups (a
run that silently left them out), and prints the verdicts of each such group."""

import json
import sys
from collections import Counter
from pathlib import Path


def main(outdir: str, expect=()) -> int:
    index = json.loads((Path(outdir) / "index.json").read_text())
    totals = Counter()
    bad = 0
    for agent, cases in sorted(index.items()):
        for case_id in sorted(cases, key=lambda c: [int(x) for x in c.split(".")]):
            result = cases[case_id]
            behavior, close = result["behavior"], result["behaviorClose"]
            totals[behavior] += 1
            if behavior != "OK" or close not in ("OK", "INFORMATIONAL"):
                print(f"  {agent} {case_id}: {behavior} (close: {close})")
            if behavior in ("FAILED", "UNIMPLEMENTED", "ERROR") or close in ("FAILED", "FAILED_BY_CLIENT"):
                bad += 1
    print("  " + ", ".join(f"{k}: {v}" for k, v in sorted(totals.items())))
    for group in expect:
        verdicts = Counter(
            r["behavior"] for cases in index.values() for c, r in cases.items() if c.split(".")[0] == group
        )
        print(f"  group {group}: " + (", ".join(f"{k}: {v}" for k, v in sorted(verdicts.items())) or "no case"))
        if not verdicts:
            bad += 1
    return 1 if bad else 0


if __name__ == "__main__":
    args = sys.argv[1:]
    expect = []
    if "--expect" in args:
        i = args.index("--expect")
        expect = args[i + 1].split(",")
        del args[i : i + 2]
    sys.exit(main(args[0], expect))
