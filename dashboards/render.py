#!/usr/bin/env python3
"""Renders every dashboard's panels to PNG from a live Prometheus, so a reader can see what the
dashboards show without Grafana (one image per dashboard, one subplot per panel, laid out like
the dashboard's grid). Needs matplotlib.

    python3 dashboards/render.py --prometheus http://127.0.0.1:9090 --out /tmp/pictures

The scenario tests call it when SOCKSCOPE_PICTURES=<dir> is set, against their own Prometheus:

    /var/cache/sockscope/venv/bin/pip install matplotlib
    SOCKSCOPE_PICTURES=/tmp/pictures cargo test --test scenario
"""

import argparse
import glob
import json
import os
import re
import time
import urllib.parse
import urllib.request

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def fill(expr, window):
    return (expr.replace("$__rate_interval", "1m").replace("$__range", window)
            .replace("$cluster", ".*").replace("$namespace", ".*").replace("$workload", ".*")
            .replace("$own_hosts", "(.+\\\\.)?(example|sockscope)\\\\.(com|test)")
            .replace("$endpoint", ".*"))


def get(base, path, params):
    url = f"{base}{path}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.load(r)["data"]["result"]


def legend(fmt, metric):
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: metric.get(m.group(1), ""), fmt or "") or \
        ",".join(f"{k}={v}" for k, v in metric.items() if k != "__name__") or "value"


def draw(ax, base, panel, window, now):
    ax.set_title(panel["title"], fontsize=9)
    unit = panel["fieldConfig"]["defaults"].get("unit", "")
    kind = panel["type"]
    if kind == "timeseries":
        for t in panel["targets"]:
            res = get(base, "/api/v1/query_range", {"query": fill(t["expr"], window), "start": now - 900,
                                                      "end": now, "step": 5})
            for s in res[:10]:
                xs = [float(v[0]) - now for v in s["values"]]
                ys = [float(v[1]) for v in s["values"]]
                ax.plot(xs, ys, label=legend(t.get("legendFormat"), s["metric"])[:40])
        ax.set_xlabel("seconds ago", fontsize=7)
        ax.set_ylabel(unit, fontsize=7)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6)
        else:
            ax.text(0.5, 0.5, "no data", ha="center", transform=ax.transAxes)
    else:
        rows = []
        for t in panel["targets"]:
            for s in get(base, "/api/v1/query", {"query": fill(t["expr"], window), "time": now}):
                labels = {k: v for k, v in s["metric"].items() if k != "__name__"}
                rows.append((labels, s["value"][1]))
        ax.axis("off")
        if not rows:
            ax.text(0.5, 0.5, "no data", ha="center", transform=ax.transAxes)
            return
        if kind == "stat":
            ax.text(0.5, 0.5, rows[0][1], ha="center", va="center", fontsize=28, transform=ax.transAxes)
            return
        keys = sorted({k for labels, _ in rows for k in labels})
        cells = [[labels.get(k, "") for k in keys] + [f"{float(v):.4g}"] for labels, v in rows[:15]]
        table = ax.table(cellText=cells, colLabels=keys + [unit or "value"], loc="upper center")
        table.auto_set_font_size(False)
        table.set_fontsize(6)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--prometheus", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--window", default="5m", help="value of $__range")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    now = time.time()
    here = os.path.dirname(os.path.abspath(__file__))
    for path in sorted(glob.glob(os.path.join(here, "*.json"))):
        d = json.load(open(path))
        panels = d["panels"]
        rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
        fig = plt.figure(figsize=(20, rows * 0.55))
        grid = fig.add_gridspec(rows, 24, hspace=2.5, wspace=1.5)
        for p in panels:
            g = p["gridPos"]
            ax = fig.add_subplot(grid[g["y"]:g["y"] + g["h"] - 1, g["x"]:g["x"] + g["w"]])
            try:
                draw(ax, args.prometheus, p, args.window, now)
            except Exception as e:  # one broken panel should not hide the others
                ax.text(0.5, 0.5, f"error: {e}", ha="center", transform=ax.transAxes, fontsize=7)
        fig.suptitle(d["title"])
        out = os.path.join(args.out, os.path.basename(path).replace(".json", ".png"))
        fig.savefig(out, dpi=80)
        plt.close(fig)
        print(out)


if __name__ == "__main__":
    main()
