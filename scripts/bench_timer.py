#!/usr/bin/env python3
"""Times commands side by side: each round runs every command once, in turn
(interleaved, so a change in the machine's load hits every contender alike),
and the medians over the rounds are reported. Per run it measures wall time,
CPU time (user + system) and peak RSS of the command and its children
(`os.wait4`), and the load average as the run started.

  bench_timer.py RUNS SPEC.json

SPEC is a JSON list of {"label": ..., "cmd": "shell command", "before":
"shell command run untimed before each run (optional)", "ratio_to": "label of
the reference (optional)"}. Prints one line per command:

  label | median wall s (min-max) | median CPU s | peak RSS MiB | load | ratio

and writes every run's figures to SPEC.runs.json. A command that exits with a
status other than 0 or 1 stops the benchmark (1 is grep's "no match").
"""
import json
import os
import statistics
import subprocess
import sys
import time


def run_once(cmd):
    load = os.getloadavg()[0]
    start = time.perf_counter()
    proc = subprocess.Popen(["bash", "-c", cmd])
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    if code not in (0, 1):
        sys.exit(f"{cmd!r} exited with {code}")
    # ru_maxrss of wait4 is the largest RSS among the process and the
    # children it waited for (KiB on Linux).
    return {
        "wall": wall,
        "cpu": usage.ru_utime + usage.ru_stime,
        "rss_kib": usage.ru_maxrss,
        "load": load,
    }


def main():
    runs, spec_path = int(sys.argv[1]), sys.argv[2]
    spec = json.load(open(spec_path))
    results = {c["label"]: [] for c in spec}
    for _ in range(runs):
        for c in spec:
            if c.get("before"):
                subprocess.run(["bash", "-c", c["before"]], check=True)
            results[c["label"]].append(run_once(c["cmd"]))
    json.dump(results, open(spec_path + ".runs.json", "w"), indent=1)
    medians = {}
    for c in spec:
        rs = results[c["label"]]
        medians[c["label"]] = statistics.median(r["wall"] for r in rs)
    for c in spec:
        rs = results[c["label"]]
        walls = [r["wall"] for r in rs]
        line = "%s | %.3f (%.3f-%.3f) | %.2f | %d | %.1f-%.1f" % (
            c["label"],
            statistics.median(walls),
            min(walls),
            max(walls),
            statistics.median(r["cpu"] for r in rs),
            max(r["rss_kib"] for r in rs) // 1024,
            min(r["load"] for r in rs),
            max(r["load"] for r in rs),
        )
        ref = c.get("ratio_to")
        if ref:
            # The median of the per-round ratios: each pair ran back to back.
            ratios = [a["wall"] / b["wall"] for a, b in zip(rs, results[ref])]
            line += " | %.2f x %s (per round %.2f-%.2f)" % (
                statistics.median(ratios),
                ref,
                min(ratios),
                max(ratios),
            )
        print(line, flush=True)


if __name__ == "__main__":
    main()
