"""charts.py RESULTS_DIR: PNG charts from results.json; prints the file names it wrote.
Run with a Python that has matplotlib; the rest of the bench does not need it."""
import json
import os
import statistics
import sys

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

COLORS = {"lazypull": "#1f77b4", "containerd+lazypull": "#4a9fe0", "containerd+stargz": "#ff7f0e",
          "lazypull-eager": "#2ca02c", "containerd": "#7f7f7f", "podman": "#9467bd"}


def grouped(data, link, field):
    """{image: {(system, format): [values]}} of successful runs on `link`."""
    table = {}
    for r in data["runs"]:
        if r["link"] == link and "error" not in r and r.get(field) is not None:
            table.setdefault(r["image"], {}).setdefault((r["system"], r["format"]), []).append(r[field])
    return table


def bars(data, link, field, scale, ylabel, title, path, log=False):
    table = grouped(data, link, field)
    if not table:
        return None
    series = sorted({k for cells in table.values() for k in cells}, key=lambda k: (list(COLORS).index(k[0]), k[1]))
    images = list(table)
    width = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(max(7, 1.6 * len(images) * len(series) / 3), 4.5))
    for i, key in enumerate(series):
        xs, ys, lo, hi = [], [], [], []
        for j, image in enumerate(images):
            values = table[image].get(key)
            if not values:
                continue
            m = statistics.median(values) / scale
            xs.append(j + i * width - 0.4 + width / 2)
            ys.append(m)
            lo.append(m - min(values) / scale)
            hi.append(max(values) / scale - m)
        hatch = {"estargz-opt": "//", "zstdchunked": ".."}.get(key[1])
        ax.bar(xs, ys, width, yerr=[lo, hi], capsize=2, label=f"{key[0]} ({key[1]})",
               color=COLORS.get(key[0], "#333333"), hatch=hatch, edgecolor="white")
    ax.set_xticks(range(len(images)))
    ax.set_xticklabels(images)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if log:
        ax.set_yscale("log")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return os.path.basename(path)


def main():
    out = sys.argv[1]
    with open(os.path.join(out, "results.json")) as f:
        data = json.load(f)
    written = []
    for link, spec in data["links"].items():
        written.append(bars(data, link, "seconds", 1, "seconds to first output (median, min–max)",
                            f"Cold start, {spec['label']}", os.path.join(out, f"cold-start-{link}.png"), log=True))
        written.append(bars(data, link, "bytes", 1e6, "MB fetched by first output",
                            f"Bytes fetched, {spec['label']}", os.path.join(out, f"bytes-{link}.png"), log=True))
    print("\n".join(w for w in written if w))


if __name__ == "__main__":
    main()
