#!/usr/bin/env python3
"""Read the logs of the bench's terraform wrapper (benches/lib.sh make_tf_wrapper).

Each line of a log is one terraform command a stategraph run made:
"SUBCOMMAND WALL CPU START END" (older logs: "SUBCOMMAND WALL").
SUBCOMMAND is plan-discovery (a refresh-less discovery plan), plan-refresh
(the scoped refresh), plan (the plan of the cone), or terraform's own name.

    tf_spans.py phases TFLOG WALL   one run: "init discovery refresh show targeted other stategraph side_by_side"
    tf_spans.py breakdown LOGDIR    medians over LOGDIR/*.tflog, one line of text
"""

import glob
import statistics
import sys

PHASES = ("init", "discovery", "refresh", "show", "targeted", "other")


def read(path):
    rows = []
    for line in open(path):
        f = line.split()
        if not f:
            continue
        wall = float(f[1])
        cpu = float(f[2]) if len(f) > 2 else 0.0
        span = (float(f[3]), float(f[4])) if len(f) > 4 else None
        rows.append((f[0], wall, cpu, span))
    return rows


def busy(rows):
    """Wall time during which at least one terraform command ran."""
    spans = sorted(s for *_, s in rows if s)
    if len(spans) < len(rows):
        return sum(w for _, w, _, _ in rows)
    total, end = 0.0, None
    for a, b in spans:
        if end is None or a > end:
            total += b - a
            end = b
        elif b > end:
            total += b - end
            end = b
    return total


def phase_of(sub):
    return {
        "plan-discovery": "discovery",
        "plan-refresh": "refresh",
        "plan": "targeted",
        "init": "init",
        "show": "show",
    }.get(sub, "other")


def phases(path, wall):
    rows = read(path)
    ph = dict.fromkeys(PHASES, 0.0)
    for sub, w, _, _ in rows:
        ph[phase_of(sub)] += w
    b = busy(rows)
    side = sum(ph.values()) - b
    print(" ".join(f"{ph[p]:.2f}" for p in PHASES) + f" {wall - b:.2f} {side:.2f}")


def breakdown(logdir):
    runs = [read(p) for p in sorted(glob.glob(logdir + "/*.tflog"))]
    runs = [r for r in runs if r]
    if not runs:
        print("?")
        return
    med = statistics.median
    total = med(sum(w for _, w, _, _ in r) for r in runs)
    side = med(sum(w for _, w, _, _ in r) - busy(r) for r in runs)
    seqs = {tuple(s for s, *_ in r) for r in runs}
    if len(seqs) == 1:
        seq = next(iter(seqs))
        parts = [
            f"{s} {med(r[i][1] for r in runs):.2f}s/{med(r[i][2] for r in runs):.2f}cpu"
            for i, s in enumerate(seq)
        ]
    else:  # the runs differ: per-subcommand totals
        subs = sorted({s for r in runs for s, *_ in r})
        parts = [
            f"{s} {med(sum(w for x, w, _, _ in r if x == s) for r in runs):.2f}s total"
            for s in subs
        ]
    extra = f", {side:.2f}s of it side by side" if side > 0.05 else ""
    print(", ".join(parts) + f" (terraform total {total:.2f}s{extra})")


if __name__ == "__main__":
    if sys.argv[1] == "phases":
        phases(sys.argv[2], float(sys.argv[3]))
    elif sys.argv[1] == "breakdown":
        breakdown(sys.argv[2])
    else:
        sys.exit(__doc__)
