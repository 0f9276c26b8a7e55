"""results.json → summary.md (ratios first) and PNG charts. Every number comes from the run's
own JSON; targets are the issue's, shown beside what was measured."""
import json
import os
import shutil
import statistics
import subprocess

BASELINE = ("containerd", "gzip")


def progress_line(record):
    cell = f"{record['link']:>8} {record['image']:>10} {record['system'] + ' (' + record['format'] + ')':<34} run {record['run']}"
    if "error" in record:
        return f"{cell}: FAILED {record['error'][:300]}"
    extra = ""
    if record.get("bytes") is not None:
        extra += f", {record['bytes'] / 1e6:.1f} MB"
    if record.get("host_rss_kib"):
        extra += f", host RSS {record['host_rss_kib'] / 1024:.0f} MiB"
    if record.get("background_seconds"):
        extra += f", background done {record['background_seconds']:.1f} s"
    return f"{cell}: {record['seconds']:.2f} s{extra}"


def cells(data):
    """{(link, image, system, format): [successful run records]} and the failures."""
    ok, failed = {}, {}
    for r in data["runs"]:
        key = (r["link"], r["image"], r["system"], r["format"])
        (failed if "error" in r else ok).setdefault(key, []).append(r)
    return ok, failed


def median(records, field="seconds"):
    values = [r[field] for r in records if r.get(field) is not None]
    return statistics.median(values) if values else None


def spread(records):
    values = [r["seconds"] for r in records]
    return f"{statistics.median(values):.2f} s ({min(values):.2f}–{max(values):.2f})"


def targets(data, ok):
    """(claim, measured text, target text, met?) rows for the issue's acceptance ratios."""
    rows = []

    def seconds(link, image, system, fmt):
        return median(ok.get((link, image, system, fmt), []))

    def ratio_row(claim, slow, fast, target):
        if slow is None or fast is None:
            rows.append((claim, "not measured", f"≥ {target}x", None))
        else:
            r = slow / fast
            rows.append((claim, f"**{r:.2f}x** ({slow:.2f} s / {fast:.2f} s)", f"≥ {target}x", r >= target))

    link = "100mbit"
    if any(k[0] == link and k[1] == "python" for k in ok):
        ctd = seconds(link, "python", *BASELINE)
        ratio_row("python, 100 Mbit/s: containerd + lazypull vs containerd's eager pull",
                  ctd, seconds(link, "python", "containerd+lazypull", "estargz"), 10)
        for fmt, label in (("estargz", "eStargz"), ("estargz-opt", "eStargz optimized")):
            ratio_row(f"python, 100 Mbit/s, {label}: containerd + lazypull vs containerd + stargz-snapshotter",
                      seconds(link, "python", "containerd+stargz", fmt),
                      seconds(link, "python", "containerd+lazypull", fmt), 1.5)
        ratio_row("python, 100 Mbit/s: `lazypull mount` + chroot vs containerd's eager pull",
                  ctd, seconds(link, "python", "lazypull", "estargz"), 10)
    if any(k[0] == "loopback" and k[1] == "python" for k in ok):
        eager = seconds("loopback", "python", "lazypull-eager", "gzip")
        ratio_row("python, loopback: eager pull + run, lazypull vs containerd",
                  seconds("loopback", "python", *BASELINE), eager, 3)
        ratio_row("python, loopback: eager pull + run, lazypull vs podman",
                  seconds("loopback", "python", "podman", "gzip"), eager, 1.6)
    for image, reads in data.get("tree_reads", {}).items():
        if "error" in reads:
            rows.append((f"{image}: full-tree read vs overlayfs", "failed: " + reads["error"][:200], "≥ 0.8", False))
            continue
        o, l = statistics.median(reads["overlayfs_read"]), statistics.median(reads["lazypull_read"])
        rows.append((f"{image}: full-tree read after background fetch, vs overlayfs",
                     f"**{o / l:.2f}** ({o:.2f} s / {l:.2f} s)", "≥ 0.8", o / l >= 0.8))
        o, l = statistics.median(reads["overlayfs_walk"]), statistics.median(reads["lazypull_walk"])
        rows.append((f"{image}: metadata walk (`tar cf /dev/null`), vs overlayfs",
                     f"**{o / l:.2f}** ({o:.2f} s / {l:.2f} s)", "—", None))
    runs = ok.get((link, "python", "lazypull", "estargz"), [])
    rss = [r["host_rss_kib_after_background"] for r in runs if r.get("host_rss_kib_after_background")] \
        or [r["host_rss_kib"] for r in runs if r.get("host_rss_kib")]
    if rss:
        peak = max(rss) / 1024
        rows.append(("python: layer host peak RSS (`lazypull mount`, after the background fetch)",
                     f"**{peak:.0f} MiB**", "≤ 64 MiB", peak <= 64))
    return rows


def write(data, out):
    ok, failed = cells(data)
    lines = [f"# lazypull bench — {data['profile']} profile, {data['started']}", ""]
    m = data["machine"]
    lines += [f"lazypull {m['lazypull']}; {m['containerd']}; {m['podman']}; stargz-snapshotter {m['stargz-snapshotter']}; "
              f"Linux {m['kernel']}, {m['cpus']} CPUs, {m['memory_gib']} GiB. {data['runs_per_cell']} cold runs per "
              "cell (state wiped, page cache dropped, daemons already running); medians with min–max."
              + (f" Every system's state on {m['state_filesystem']}." if m.get("state_filesystem") else ""), ""]
    if data.get("aborted"):
        lines += ["**This run was aborted; the tables show what it measured before.**", ""]
    lines += ["## Targets", "", "| claim | measured | target | |", "|---|---|---|---|"]
    for claim, measured, target, met in targets(data, ok):
        lines.append(f"| {claim} | {measured} | {target} | {'✓' if met else ('✗' if met is False else '')} |")
    lines.append("")
    for peer, reason in data.get("peers", {}).items():
        lines += [f"**{peer} could not run:** {reason}", ""]

    for link, spec in data["links"].items():
        rows = sorted({k for k in list(ok) + list(failed) if k[0] == link}, key=lambda k: (k[1], list(data["systems"]).index(k[2]), k[3]))
        if not rows:
            continue
        lines += [f"## Cold start, {spec['label']}", "",
                  "| image | system | format | time to first output | vs containerd | fetched at first output | mount |",
                  "|---|---|---|---|---|---|---|"]
        for key in rows:
            _, image, system, fmt = key
            records = ok.get(key, [])
            if not records:
                reason = failed[key][0]["error"][:200].replace("|", "/").replace("\n", " ")
                lines.append(f"| {image} | {data['systems'][system]} | {fmt} | failed: {reason} | | | |")
                continue
            base = median(ok.get((link, image) + BASELINE, []))
            t = median(records)
            ratio = f"{base / t:.1f}x" if base else ""
            fetched = median(records, "bytes")
            total = data["images"][image]["compressed_bytes"].get(fmt)
            fetched_text = f"{fetched / 1e6:.1f} MB ({100 * fetched / total:.1f} %)" if fetched is not None and total else ""
            mount = median(records, "mount_seconds")
            lines.append(f"| {image} | {data['systems'][system]} | {fmt} | {spread(records)} | {ratio} | {fetched_text} | "
                         f"{f'{mount:.2f} s' if mount else ''} |")
            if key in failed:
                lines[-1] += f" {len(failed[key])} run(s) failed: {failed[key][0]['error'][:120]}"
        lines.append("")

    background = [(k, r) for k, rs in ok.items() for r in rs if r.get("background_seconds")]
    if background:
        lines += ["## Background fetch", "",
                  "`lazypull mount` of the eStargz image: time from the mount until every layer is local, against "
                  "downloading the same blobs in parallel with curl over the same link.", "",
                  "| image | link | background complete | raw transfer | bytes | layer host peak RSS | CPU (host + control plane) |",
                  "|---|---|---|---|---|---|---|"]
        for (link, image, _, _), r in background:
            raw = data["raw_transfer"].get(image, {}).get(link)
            lines.append(f"| {image} | {data['links'][link]['label']} | {r['background_seconds']:.1f} s | "
                         f"{f'{raw:.1f} s' if raw else ''} | {r['background_bytes'] / 1e6:.1f} MB | "
                         f"{r['host_rss_kib_after_background'] / 1024:.0f} MiB | {r['cpu_seconds_after_background']:.2f} s |")
        lines.append("")

    usage = [(k, rs) for k, rs in ok.items() if k[2] in ("lazypull", "containerd+lazypull") and median(rs, "host_rss_kib")]
    if usage:
        lines += ["## lazypull's processes at first output", "",
                  "| link | image | system | format | layer host peak RSS | control plane peak RSS | CPU seconds |",
                  "|---|---|---|---|---|---|---|"]
        for (link, image, system, fmt), rs in sorted(usage):
            lines.append(f"| {data['links'][link]['label']} | {image} | {system} | {fmt} | "
                         f"{median(rs, 'host_rss_kib') / 1024:.0f} MiB | {median(rs, 'control_rss_kib') / 1024:.0f} MiB | "
                         f"{median(rs, 'cpu_seconds'):.2f} |")
        lines.append("")

    if data.get("tree_reads"):
        lines += ["## Reading the whole tree", "",
                  "After the background fetch, page cache dropped before each pass: `tar cf - -C DIR . | wc -c` "
                  "(full read) and `tar cf /dev/null -C DIR .` (metadata walk; GNU tar reads no contents then). "
                  "overlayfs is the same image unpacked by `lazypull mount --eager`.", "",
                  "| image | full read, overlayfs | full read, lazypull | ratio | walk, overlayfs | walk, lazypull | ratio |",
                  "|---|---|---|---|---|---|---|"]
        for image, r in data["tree_reads"].items():
            if "error" in r:
                lines.append(f"| {image} | failed: {r['error'][:200]} | | | | | |")
                continue
            med = {k: statistics.median(v) for k, v in r.items()}
            lines.append(f"| {image} | {med['overlayfs_read']:.2f} s | {med['lazypull_read']:.2f} s | "
                         f"{med['overlayfs_read'] / med['lazypull_read']:.2f} | {med['overlayfs_walk']:.2f} s | "
                         f"{med['lazypull_walk']:.2f} s | {med['overlayfs_walk'] / med['lazypull_walk']:.2f} |")
        lines.append("")

    lines += ["## Images", "", "| image | workload | gzip | eStargz | eStargz optimized | zstd:chunked |", "|---|---|---|---|---|---|"]
    for name, image in data["images"].items():
        sizes = image["compressed_bytes"]
        lines.append(f"| {name} | `{' '.join(image['workload'])}` | " +
                     " | ".join(f"{sizes[f] / 1e6:.1f} MB" if f in sizes else "—"
                                for f in ("gzip", "estargz", "estargz-opt", "zstdchunked")) + " |")
    lines.append("")

    charts = draw_charts(out)
    if charts:
        lines += ["## Charts", ""] + [f"![{c}]({c})" for c in charts] + [""]
    with open(os.path.join(out, "summary.md"), "w") as f:
        f.write("\n".join(lines))
    print("\n".join(lines))


def draw_charts(out):
    """Runs charts.py with a Python that has matplotlib (Debian's python3-matplotlib)."""
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "charts.py")
    for python in ("/usr/bin/python3", shutil.which("python3")):
        if python and subprocess.run([python, "-c", "import matplotlib"], capture_output=True).returncode == 0:
            result = subprocess.run([python, script, out], capture_output=True, text=True)
            if result.returncode == 0:
                return result.stdout.split()
            print(f"charts failed: {result.stderr.strip()[-500:]}")
            return []
    print("charts skipped: no python3 with matplotlib (apt-get install python3-matplotlib)")
    return []


if __name__ == "__main__":
    import sys
    with open(os.path.join(sys.argv[1], "results.json")) as f:
        write(json.load(f), sys.argv[1])
