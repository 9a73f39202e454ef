#!/usr/bin/env python3
"""Plot the bench results: which plot depends on the CSV's columns.

    benches/plot.py [benches/results/plan_sweep.csv] [benches/results/plan_vs_n.png]
    benches/plot.py benches/results/apply_throughput.csv benches/results/apply_throughput.png

- plan_sweep.sh's CSV (column n): plan wall time vs N for terraform and
  stategraph; when the CSV has the per-phase columns (ph_*), a second PNG
  next to it (NAME_phases.png) with stategraph's plan split into phases.
- plan_apply.sh section 2's CSV (column k): throughput (applies/min) and
  wall time vs K concurrent disjoint applies, for both tools.

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

allrows = list(csv.DictReader(open(src)))
THROUGHPUT = bool(allrows) and "k" in allrows[0]
if THROUGHPUT:
    rows = [r for r in allrows if r["tf_wall_s"] not in ("?", "") and r["sg_wall_s"] not in ("?", "")]
    rows.sort(key=lambda r: int(r["k"]))
    ns = [int(r["k"]) for r in rows]
    tf = [float(r["tf_applies_per_min"]) for r in rows]
    sg = [float(r["sg_applies_per_min"]) for r in rows]
else:
    allrows = [r for r in allrows if r["tf_plan_s"] not in ("?", "")]
    # One series per added latency (plan_sweep.sh LATENCIES); the phases
    # plot and the plain PNG show the highest one.
    lats = sorted({int(r.get("latency_ms") or 0) for r in allrows})
    by_lat = {l: sorted((r for r in allrows if int(r.get("latency_ms") or 0) == l), key=lambda r: int(r["n"]))
              for l in lats}
    rows = by_lat[lats[-1]] if lats else []
    ns = [int(r["n"]) for r in rows]
    tf = [float(r["tf_plan_s"]) for r in rows]
    sg = [float(r["sg_plan_s"]) for r in rows]
if not rows:
    sys.exit("plot.py: no rows in " + src)


def throughput_matplotlib():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tfw = [float(r["tf_wall_s"]) for r in rows]
    sgw = [float(r["sg_wall_s"]) for r in rows]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4.2), dpi=110)
    backend = rows[0].get("tf_backend", "?")
    a1.plot(ns, tf, "o-", color="tab:red", label=f"terraform (one state, {backend} backend, -target)")
    a1.plot(ns, sg, "s-", color="tab:blue", label="stategraph (one stored state)")
    a1.plot(ns, [tf[0] * k / ns[0] for k in ns], ":", color="gray", label="ideal: K x the rate of one")
    for x, a, b in zip(ns, tf, sg):
        a1.annotate(f"{a:.1f}", (x, a), textcoords="offset points", xytext=(0, -13), ha="center", fontsize=8, color="tab:red")
        a1.annotate(f"{b:.1f}", (x, b), textcoords="offset points", xytext=(0, 7), ha="center", fontsize=8, color="tab:blue")
    a1.set_xlabel("K concurrent disjoint applies")
    a1.set_ylabel("applies per minute (K x 60 / wall)")
    a1.set_title("Throughput")
    a1.set_xticks(ns)
    a1.set_ylim(bottom=0)
    a1.grid(True, alpha=0.3)
    a1.legend(loc="upper left", fontsize=8)
    a2.plot(ns, tfw, "o-", color="tab:red", label="terraform")
    a2.plot(ns, sgw, "s-", color="tab:blue", label="stategraph")
    for x, a, b in zip(ns, tfw, sgw):
        a2.annotate(f"{a:.1f}s", (x, a), textcoords="offset points", xytext=(0, 7), ha="center", fontsize=8, color="tab:red")
        a2.annotate(f"{b:.1f}s", (x, b), textcoords="offset points", xytext=(0, -14), ha="center", fontsize=8, color="tab:blue")
    a2.set_xlabel("K concurrent disjoint applies")
    a2.set_ylabel("wall time until all K are done (s, median)")
    a2.set_title("Wall time")
    a2.set_xticks(ns)
    a2.set_ylim(bottom=0)
    a2.grid(True, alpha=0.3)
    a2.legend(loc="upper left", fontsize=8)
    fig.suptitle(f"K concurrent disjoint applies, {rows[0].get('instances', '?')} instances, "
                 f"each apply sleeps {rows[0].get('sleep_s', '?')} s, median of {rows[0].get('reps', '?')}", fontsize=10)
    fig.tight_layout()
    fig.savefig(dst)


PHASES = [("ph_init_s", "init", "tab:gray"), ("ph_discovery_s", "discovery plan", "tab:orange"),
          ("ph_refresh_s", "scoped refresh", "tab:cyan"),
          ("ph_show_s", "show -json", "tab:olive"), ("ph_targeted_s", "targeted plan", "tab:green"),
          ("ph_other_tf_s", "other terraform", "tab:purple"), ("ph_stategraph_s", "stategraph itself", "tab:blue")]


def phases_matplotlib():
    """Stacked bars: stategraph's plan split into phases, next to terraform's plan."""
    if not rows or "ph_init_s" not in rows[0] or any(r["ph_init_s"] in ("?", "") for r in rows):
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = os.path.splitext(dst)[0] + "_phases.png"
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    xs = range(len(rows))
    bottom = [0.0] * len(rows)
    # A scoped refresh run beside the plan overlaps it: drawn as a thin bar
    # of its own next to the stack, whose top is then the wall time.
    side = [float(r.get("ph_side_by_side_s") or 0) > 0.05 for r in rows]
    bottom = [0.0] * len(rows)
    for key, label, color in PHASES:
        v = [max(0.0, float(r.get(key) or 0)) for r in rows]
        beside = [x if (key == "ph_refresh_s" and sd) else 0.0 for x, sd in zip(v, side)]
        v = [x - y for x, y in zip(v, beside)]
        if any(beside):
            ax.bar([x + 0.45 for x in xs], beside, 0.1, color=color, label=f"{label}, beside the plan")
        if not any(v):
            continue
        ax.bar([x + 0.2 for x in xs], v, 0.38, bottom=bottom, color=color, label=label)
        bottom = [b + x for b, x in zip(bottom, v)]
    ax.bar([x - 0.2 for x in xs], tf, 0.38, color="tab:red", label="terraform plan (whole)")
    floor = float(rows[0].get("floor_s") or 0)
    if floor:
        ax.axhline(floor, color="black", linestyle=":", linewidth=1,
                   label=f"floor: one terraform command with nothing to do ({floor:.1f} s)")
    ax.set_xticks(list(xs))
    ax.set_xticklabels([f"N={n}" for n in ns])
    ax.set_ylabel("wall time (s, median)")
    flav = rows[0].get("flavour", "terraform_data")
    lat = rows[0].get("latency_ms", "0")
    flav += f", +{lat} ms/request" if lat not in ("", "0") else ""
    ax.set_title(f"Where stategraph's plan time goes ({flav})\nleft: terraform plan, right: stategraph plan by phase", fontsize=10)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(out)
    return out


def with_matplotlib():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=110)
    styles = ["-", "--", "-.", ":"]
    top = 0.0
    for i, lat in enumerate(lats):
        rs = by_lat[lat]
        xs = [int(r["n"]) for r in rs]
        t = [float(r["tf_plan_s"]) for r in rs]
        g = [float(r["sg_plan_s"]) for r in rs]
        top = max([top] + t + g)
        suffix = f", +{lat} ms/request" if len(lats) > 1 or lat else ""
        ls = styles[i % len(styles)]
        ax.plot(xs, t, "o" + ls, color="tab:red", label=f"terraform plan (full refresh{suffix})")
        ax.plot(xs, g, "s" + ls, color="tab:blue", label=f"stategraph plan (change cone{suffix})")
        for x, a, b, r in zip(xs, t, g, rs):
            note_tf, note_sg = f"{a:.1f}s", f"{b:.1f}s"
            if r.get("tf_requests", "0") not in ("", "0"):
                note_tf += f" {r['tf_requests']} req"
                note_sg += f" {r['sg_requests']} req"
            ax.annotate(note_tf, (x, a), textcoords="offset points", xytext=(0, 7 + 10 * i), ha="center",
                        fontsize=7, color="tab:red")
            ax.annotate(note_sg, (x, b), textcoords="offset points", xytext=(0, -14 - 10 * i), ha="center",
                        fontsize=7, color="tab:blue")
    floor = float(rows[0].get("floor_s") or 0)
    if floor:
        ax.axhline(floor, color="black", linestyle=":", linewidth=1,
                   label=f"one terraform command with nothing to do ({floor:.1f} s)")
    cones = sorted({r["cone"] for r in rows})
    flav = rows[0].get("flavour", "terraform_data")
    flav = "aws on moto" if flav == "aws" else flav
    ax.set_title(f"Plan wall time vs state size ({flav}; {rows[0]['changed']}-instance change, cone {'/'.join(cones)})",
                 fontsize=10)
    ax.set_xlabel("resource instances in the state (N)")
    ax.set_ylabel("plan wall time (s, median)")
    ax.set_xlim(left=0)
    ax.set_ylim(-0.08 * top, top * 1.2)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
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
    if THROUGHPUT:
        throughput_matplotlib()
    else:
        with_matplotlib()
        extra = phases_matplotlib()
        if extra:
            print(f"plot.py: wrote {extra} (matplotlib)")
    how = "matplotlib"
except ImportError:
    with_plain_png()
    how = "plain PNG writer (no matplotlib: red terraform, blue stategraph, no labels)"
print(f"plot.py: wrote {dst} ({how})")
