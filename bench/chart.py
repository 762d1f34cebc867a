#!/usr/bin/env python3
"""Draws bench/out/bench.json (scripts/bench.sh) as an SVG bar chart: requests per second of each
target beside the nginx reference measured in the same run, per connection count, with each
target's ratio to nginx and the target line. Standard library only.

    python3 bench/chart.py [bench/out/bench.json] [bench/throughput.svg]
"""
import json
import sys
from xml.sax.saxutils import escape

# Targets at 64 connections: issue 6 (plain), issue 12 (304 over TLS vs nginx over TLS).
TARGETS = {"304": 1.0, "200": 0.9, "heartbeat": 0.8, "304-tls": 0.9}
COLORS = {"static": "#9aa5b1", "304": "#2f6fb3", "200": "#4a9d5b", "heartbeat": "#c7782d",
          "static-tls": "#cfd5db", "304-tls": "#7fa6d6"}
LABELS = {"static": "nginx static", "304": "desired 304", "200": "desired 200",
          "heartbeat": "heartbeat 204", "static-tls": "nginx TLS", "304-tls": "304 over TLS"}
# Each TLS bar's ratio is to nginx over TLS (its own reference), the others' to plain nginx.
REFERENCE = {"304-tls": "static-tls", "static-tls": "static-tls"}


def main():
    src = sys.argv[1] if len(sys.argv) > 1 else "bench/out/bench.json"
    dst = sys.argv[2] if len(sys.argv) > 2 else "bench/throughput.svg"
    doc = json.load(open(src))
    rows = doc["load"]
    groups = sorted({r["connections"] for r in rows})
    top = max(r["rps"] for r in rows) * 1.18
    W, H, left, bottom, topm = 880, 360, 70, 50, 50
    plot_h = H - bottom - topm
    group_w = (W - left - 20) / len(groups)
    order = [t for t in COLORS if any(r["target"] == t for r in rows)]
    bar_w = group_w / (len(order) + 2)
    title = (f"Ringfence agent API vs nginx static, {doc['hosts']:,} hosts, "
             f"median of {doc['repetitions']} x {doc['duration_s']} s")
    sub = f"{doc['machine']['cores']} cores, {doc['machine']['cpu']}; ratio to nginx above each bar"
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
           f'font-family="sans-serif" font-size="12">',
           f'<rect width="{W}" height="{H}" fill="white"/>',
           f'<text x="{left}" y="22" font-size="15" font-weight="bold">{escape(title)}</text>',
           f'<text x="{left}" y="40" fill="#555">{escape(sub)}</text>']
    y = lambda v: topm + plot_h - v / top * plot_h
    step = 10000 if top > 40000 else 5000 if top > 15000 else 1000
    v = 0
    while v <= top:
        out.append(f'<line x1="{left}" x2="{W - 20}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#eee"/>')
        out.append(f'<text x="{left - 6}" y="{y(v) + 4:.1f}" text-anchor="end" fill="#555">{v // 1000}k</text>')
        v += step
    out.append(f'<text x="16" y="{topm + plot_h / 2}" transform="rotate(-90 16 {topm + plot_h / 2})" '
               f'text-anchor="middle" fill="#555">requests / s</text>')
    for gi, conns in enumerate(groups):
        gx = left + gi * group_w + bar_w
        rps = {r["target"]: r["rps"] for r in rows if r["connections"] == conns}
        for bi, target in enumerate(order):
            r = next(r for r in rows if r["connections"] == conns and r["target"] == target)
            ref = rps[REFERENCE.get(target, "static")]
            x = gx + bi * bar_w
            out.append(f'<rect x="{x:.1f}" y="{y(r["rps"]):.1f}" width="{bar_w * 0.85:.1f}" '
                       f'height="{y(0) - y(r["rps"]):.1f}" fill="{COLORS[target]}"/>')
            label = "ref" if target.startswith("static") else f'{r["rps"] / ref:.2f}x'
            out.append(f'<text x="{x + bar_w * 0.42:.1f}" y="{y(r["rps"]) - 5:.1f}" '
                       f'text-anchor="middle">{label}</text>')
            if target in TARGETS and conns == 64:  # the target, as a tick on the bar
                ty = y(ref * TARGETS[target])
                out.append(f'<line x1="{x - 2:.1f}" x2="{x + bar_w * 0.85 + 2:.1f}" y1="{ty:.1f}" '
                           f'y2="{ty:.1f}" stroke="black" stroke-dasharray="3,2"/>')
        out.append(f'<text x="{gx + len(order) / 2 * bar_w:.1f}" y="{H - bottom + 18}" text-anchor="middle">'
                   f'{conns} connections</text>')
    lx = left
    for target in order:
        out.append(f'<rect x="{lx}" y="{H - 20}" width="12" height="12" fill="{COLORS[target]}"/>')
        out.append(f'<text x="{lx + 16}" y="{H - 10}">{LABELS[target]}</text>')
        lx += 100
    out.append(f'<line x1="{lx}" x2="{lx + 16}" y1="{H - 14}" y2="{H - 14}" stroke="black" '
               f'stroke-dasharray="3,2"/><text x="{lx + 20}" y="{H - 10}">target (64 conns)</text>')
    out.append("</svg>")
    open(dst, "w").write("\n".join(out) + "\n")
    print(f"chart: {dst}")


if __name__ == "__main__":
    main()
