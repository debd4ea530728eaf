#!/usr/bin/env python3
"""Summarise an Autobahn report directory written by kosoku.

Prints one line per case whose verdict is not OK (NON-STRICT, INFORMATIONAL,
UNIMPLEMENTED, FAILED), the totals per verdict, and exits 1 when any case FAILED,
was UNIMPLEMENTED or could not be run (ERROR)."""

import json
import sys
from collections import Counter
from pathlib import Path


def main(outdir: str) -> int:
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
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
