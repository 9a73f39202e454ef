#!/usr/bin/env python3
"""Plot plan wall time vs N for terraform and stategraph from plan_sweep.sh's CSV.

    benches/plot.py [benches/results/plan_sweep.csv] [benches/results/plan_vs_n.png]

Uses matplotlib when importable; otherwise writes a plain PNG (zlib + struct):
axes, ticks, and two polylines (terraform red, stategraph blue), no text.
"""

import csv
import os
import struct
import sys
import zlib

here = os.path.dirname(os.path.abspath(__file__))
src = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "results", "plan_sweep.csv")
dst = sys.argv[2] if len(sys.argv) > 2 else os.path.join(here, "results", "plan_vs_n.png")

rows = [r for r in csv.DictReader(open(src)) if r["tf_plan_s"] not in ("?", "")]
rows.sort(key=lambda r: int(r["n"]))
ns = [int(r["n"]) for r in rows]
tf = [float(r["tf_plan_s"]) for r in rows]
sg = [float(r["sg_plan_s"]) for r in rows]
if not rows:
    sys.exit("plot.py: no rows in " + src)


def with_matplotlib():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    ax.plot(ns, tf, "o-", color="tab:red", label="terraform plan (full refresh)")
    ax.plot(ns, sg, "s-", color="tab:blue", label="stategraph plan (change cone)")
    for x, a, b in zip(ns, tf, sg):
        ax.annotate(f"{a:.1f}s", (x, a), textcoords="offset points", xytext=(0, 7), ha="center", fontsize=8, color="tab:red")
        ax.annotate(f"{b:.1f}s", (x, b), textcoords="offset points", xytext=(0, -14), ha="center", fontsize=8, color="tab:blue")
    cones = sorted({r["cone"] for r in rows})
    ax.set_title(f"Plan wall time vs state size ({rows[0]['changed']}-instance change, cone {'/'.join(cones)})")
    ax.set_xlabel("resource instances in the state (N)")
    ax.set_ylabel("plan wall time (s, median)")
    ax.set_xlim(left=0)
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(dst)


def with_plain_png():
    W, H, M = 640, 400, 40
    px = bytearray(b"\xff" * (W * H * 3))

    def put(x, y, c):
        if 0 <= x < W and 0 <= y < H:
            i = (y * W + x) * 3
            px[i:i + 3] = bytes(c)

    def line(x0, y0, x1, y1, c, w=1):
        steps = max(abs(x1 - x0), abs(y1 - y0), 1)
        for s in range(steps + 1):
            x = round(x0 + (x1 - x0) * s / steps)
            y = round(y0 + (y1 - y0) * s / steps)
            for dx in range(-(w // 2), w // 2 + 1):
                for dy in range(-(w // 2), w // 2 + 1):
                    put(x + dx, y + dy, c)

    xmax, ymax = max(ns) * 1.05, max(tf + sg) * 1.1
    X = lambda v: round(M + v / xmax * (W - 2 * M))
    Y = lambda v: round(H - M - v / ymax * (H - 2 * M))
    black = (0, 0, 0)
    line(M, H - M, W - M, H - M, black)
    line(M, H - M, M, M, black)
    for n in ns:
        line(X(n), H - M, X(n), H - M + 5, black)
    for series, col in ((tf, (200, 30, 30)), (sg, (30, 60, 200))):
        pts = [(X(n), Y(v)) for n, v in zip(ns, series)]
        for a, b in zip(pts, pts[1:]):
            line(*a, *b, col, 3)
        for x, y in pts:
            for dx in range(-3, 4):
                for dy in range(-3, 4):
                    put(x + dx, y + dy, col)
    raw = b"".join(b"\x00" + bytes(px[y * W * 3:(y + 1) * W * 3]) for y in range(H))

    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)

    with open(dst, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", W, H, 8, 2, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


try:
    with_matplotlib()
    how = "matplotlib"
except ImportError:
    with_plain_png()
    how = "plain PNG writer (no matplotlib: red terraform, blue stategraph, no labels)"
print(f"plot.py: wrote {dst} ({how})")
