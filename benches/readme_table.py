#!/usr/bin/env python3
"""Makes README's Performance table from one JSON file of benches/compare.sh.

    benches/readme_table.py target/bench/compare-20261130T070000Z.json

Prints the markdown (a sentence naming the machine, date and load, then the
table) to paste into README. Only the standard library is used.
"""

import json
import sys


def seconds(value):
    return "-" if value is None else f"{value:.4f} s"


def ratio(numerator, denominator):
    if numerator is None or not denominator:
        return "-"
    return f"{numerator / denominator:.2f}x"


# Issue 15's goals: the qcow/QEMU time of the compressed converts, the
# qcow/limit time of the uncompressed one, and the firmware's queued
# qcow2/raw throughput ratio in every run. A missed goal points to the text
# under the table, which says why.
COMPRESSED_MAX = 0.8
LIMIT_MAX = 1.1
FIRMWARE_MIN = 0.95


def verdict(met, goal):
    return f"{goal}: {'met' if met else 'missed, see below'}"


def convert_goal(entry):
    workload = entry["workload"]
    if "LUKS" in workload:
        return "-"
    if "zstd" in workload or "deflate" in workload:
        return verdict(entry["qcow_s"] <= COMPRESSED_MAX * entry["qemu_s"], f"<= {COMPRESSED_MAX}x QEMU")
    if entry.get("limit_s"):
        return verdict(entry["qcow_s"] <= LIMIT_MAX * entry["limit_s"], f"<= {LIMIT_MAX}x limit")
    return "-"


def firmware_rows(entry):
    """One row per queue depth: per run, the median qcow2/raw throughput
    ratio of the interleaved passes with its spread, and the best passes'
    MB/s (a throughput ratio: above 1 the qcow2 read is faster)."""
    rows = []
    for runs in (entry["depth1"], entry["queued"]):
        ratios = ", ".join(f"{run['median']:.2f} ({run['min']:.2f}-{run['max']:.2f})" for run in runs)
        qcow2 = ", ".join(str(run["qcow2_mb_s"]) for run in runs)
        raw = ", ".join(str(run["raw_mb_s"]) for run in runs)
        label = f"{entry['workload']}, queue depth {runs[0]['depth']}, median (spread) per run: {ratios}"
        goal = "-"
        if runs is entry["queued"]:
            met = all(run["median"] >= FIRMWARE_MIN for run in runs)
            goal = verdict(met, f">= {FIRMWARE_MIN}x raw in every run")
        cells = [label, f"{qcow2} MB/s", f"raw {raw} MB/s", "-", "-", "-", "-", "-", goal]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def row(entry):
    kind = entry["kind"]
    if kind == "firmware":
        return firmware_rows(entry)
    if kind == "memory":
        label = f"{entry['workload']} (16 MiB image: {entry['qcow_small_kib']} KiB)"
        cells = [
            label,
            f"{entry['qcow_kib']} KiB",
            f"{entry['qemu_kib']} KiB",
            ratio(entry["qcow_kib"], entry["qemu_kib"]),
            "-",
            "-",
            "-",
            "-",
            "-",
        ]
    else:
        label = entry["workload"]
        if entry.get("alt_name"):
            label += f" ({entry['alt_name']}: {entry['alt_s']:.4f} s, CPU {entry['alt_cpu_s']:.4f} s)"
        cells = [
            label,
            seconds(entry["qcow_s"]),
            seconds(entry["qemu_s"]),
            ratio(entry["qcow_s"], entry["qemu_s"]),
            seconds(entry["qcow_cpu_s"]),
            seconds(entry["qemu_cpu_s"]),
            seconds(entry.get("limit_s")),
            ratio(entry["qcow_s"], entry.get("limit_s")),
            convert_goal(entry) if kind == "convert" else "-",
        ]
    return "| " + " | ".join(cells) + " |"


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: readme_table.py RESULTS.json (written by benches/compare.sh)")
    with open(sys.argv[1], encoding="utf-8") as file:
        run = json.load(file)
    machine = run["machine"]
    print(
        f"Measured {run['date']} by `benches/compare.sh` (medians of {run['reps']} "
        f"alternating runs, {run['run_seconds']} s without image making): "
        f"{machine['cpus']} CPUs ({machine['cpu']}), {machine['memory_gib']} GiB RAM, "
        f"images on tmpfs, {run['qemu']}; load average {machine['load_average_before']} "
        f"before and {machine['load_average_after']} after. The limit is the raw file "
        f"copied by {run['convert_threads']} parallel `dd` streams, as many as convert's threads."
    )
    print()
    print("| workload | qcow | QEMU | qcow/QEMU | qcow CPU | QEMU CPU | limit | qcow/limit | goal (issue 15) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for entry in run["rows"]:
        print(row(entry))


if __name__ == "__main__":
    main()
