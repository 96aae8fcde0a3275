#!/usr/bin/env bash
# The read side against what a user would otherwise run (issue 13), on one
# machine: `malog grep` against `rg` on the same files and against
# `zstdcat FILES | grep` on a zstd archive; `malog export` against `cp` plus
# `sha256sum`; and, given an index, `jobs` and `query` with each filter. The
# contenders of one comparison run in turn, RUNS rounds (scripts/bench_timer.py:
# medians, per-round ratios, peak RSS, load average), so the machine's load
# hits them alike. Results go into docs/BENCHMARKS.md by hand.
#
#   scripts/bench_read.sh           JOBS x TASKS logs of SIZE bytes (64 x 16 x
#                                   1 MiB = 1 GiB), archived plain and with zstd
#   INDEX_CONFIG=DIR/malog.toml scripts/bench_read.sh
#                                   also time `jobs`/`query` per filter on that
#                                   index (e.g. the 1,000,000-task one that
#                                   scripts/bench_memory.sh leaves behind)
#   INDEX_ROWS=1000000 scripts/bench_read.sh
#                                   the same on an index of that many task rows
#                                   made by scripts/bench_index.py
#   INDEX_ONLY=1 INDEX_CONFIG=... scripts/bench_read.sh
#                                   only the filters, no archive
#   scripts/bench_read.sh --smoke   tiny sizes, one run, the debug binary
#   MALOG_BIN=PATH ...              that binary instead of building one
#
# The logs are read from the page cache by every contender (each archive is
# read once before timing: malog's own backfill leaves nothing cached).
# Needs: curl, python3, rg (apt-get install ripgrep), zstd. Listens on a free
# port of 127.0.0.1 only.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

RUNS=${RUNS:-5}
JOBS=${JOBS:-64}
TASKS=${TASKS:-16}
SIZE=${SIZE:-$((1 << 20))}
if [ "${1:-}" = "--smoke" ]; then
  RUNS=1 JOBS=4 TASKS=4 SIZE=$((256 << 10))
fi
. scripts/bench_sim.sh
pick_binary "${1:-}"
for tool in rg zstdcat sha256sum; do
  command -v "$tool" >/dev/null || { echo "$tool is needed (apt-get install ripgrep zstd coreutils)" >&2; exit 1; }
done

WORK=$(mktemp -d /tmp/malog-bench-read.XXXXXX)
SIM_PID=
cleanup() {
  [ -n "$SIM_PID" ] && kill "$SIM_PID" 2>/dev/null || true
  rm -rf "$WORK/plain" "$WORK/zstd" "$WORK/out"
}
trap cleanup EXIT

echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(uname -r); runs: $RUNS; load now: $(cut -d' ' -f1-3 /proc/loadavg)"
if [ "${INDEX_ONLY:-0}" != 1 ]; then
start_simulator "$BIN" "$JOBS" "$TASKS" "$SIZE" "$WORK/sim.log"

backfill_archive "$BIN" "$WORK/plain" none
backfill_archive "$BIN" "$WORK/zstd" zstd
kill "$SIM_PID"; wait "$SIM_PID" 2>/dev/null || true; SIM_PID=

plain_mib=$(du -sm --apparent-size "$WORK/plain/archive" | cut -f1)
zstd_mib=$(du -sm --apparent-size "$WORK/zstd/archive" | cut -f1)
echo "archive: $JOBS jobs x $TASKS logs of $SIZE bytes: $plain_mib MiB plain, $zstd_mib MiB with zstd"
echo "contender | median wall s (min-max) | median CPU s | peak RSS MiB | load average during the runs | ratio"

# compare NAME JSON: runs the comparison described by JSON (bench_timer.py's spec).
compare() {
  printf '%s\n' "$2" >"$WORK/$1.json"
  echo "# $1"
  python3 scripts/bench_timer.py "$RUNS" "$WORK/$1.json"
}

M="$BIN -c $WORK/plain/malog.toml"
Z="$BIN -c $WORK/zstd/malog.toml"
P=$WORK/plain/archive
ZA=$WORK/zstd/archive
O=$WORK/out
mkdir -p "$O"
# A literal (rare: the simulator's warning lines) and a regular expression
# (common: about 40 % of the lines). Output goes to a file: GNU grep
# stops at the first match when its output is /dev/null.
for pattern in "${PATTERN:-NCCL watchdog}" "${PATTERN2:-loss=2\.[0-3]}"; do
  name=$(echo "$pattern" | tr -c 'A-Za-z0-9\n' '_')
  compare "grep-plain-$name" "$(python3 -c 'import json, sys; p = sys.argv[1]; print(json.dumps([
    {"label": "rg -n", "cmd": "rg -n %s %s > %s/rg.txt" % (json.dumps(p), sys.argv[3], sys.argv[4])},
    {"label": "malog grep", "cmd": "%s grep %s > %s/malog.txt" % (sys.argv[2], json.dumps(p), sys.argv[4]), "ratio_to": "rg -n"},
  ]))' "$pattern" "$M" "$P" "$O")"
  malog_lines=$(wc -l <"$O/malog.txt"); rg_lines=$(wc -l <"$O/rg.txt")
  echo "lines found: malog $malog_lines, rg $rg_lines"
  [ "$malog_lines" = "$rg_lines" ] || { echo "malog grep and rg found different lines" >&2; exit 1; }
  compare "grep-zstd-$name" "$(python3 -c 'import json, sys; p = sys.argv[1]; print(json.dumps([
    {"label": "zstdcat FILES | grep", "cmd": "find %s -name \"*.zst\" -print0 | xargs -0 zstdcat | grep -E %s > %s/zgrep.txt" % (sys.argv[3], json.dumps(p), sys.argv[4])},
    {"label": "rg -z -n", "cmd": "rg -z -n %s %s > %s/rgz.txt" % (json.dumps(p), sys.argv[3], sys.argv[4]), "ratio_to": "zstdcat FILES | grep"},
    {"label": "malog grep (zstd)", "cmd": "%s grep %s > %s/malogz.txt" % (sys.argv[2], json.dumps(p), sys.argv[4]), "ratio_to": "zstdcat FILES | grep"},
  ]))' "$pattern" "$Z" "$ZA" "$O")"
  [ "$(wc -l <"$O/malogz.txt")" = "$(wc -l <"$O/zgrep.txt")" ] || { echo "malog grep and zstdcat | grep found different lines" >&2; exit 1; }
done

# Export: every log (decoded, checked against the index) plus SHA256SUMS,
# against copying the files and hashing them. Each run writes a fresh folder.
compare export "$(python3 -c 'import json, sys; m, z, p, o = sys.argv[1:]; print(json.dumps([
  {"label": "cp -r + sha256sum", "before": "rm -rf %s/cp" % o, "cmd": "cp -r %s %s/cp && cd %s/cp && find . -type f -print0 | xargs -0 sha256sum > %s/cp.sums" % (p, o, o, o)},
  {"label": "malog export", "before": "rm -rf %s/export" % o, "cmd": "%s export --to %s/export > /dev/null" % (m, o), "ratio_to": "cp -r + sha256sum"},
  {"label": "malog export (from zstd)", "before": "rm -rf %s/exportz" % o, "cmd": "%s export --to %s/exportz > /dev/null" % (z, o), "ratio_to": "cp -r + sha256sum"},
]))' "$M" "$Z" "$P" "$O")"
(cd "$O/export" && sha256sum --quiet -c SHA256SUMS) || { echo "the export does not pass sha256sum -c" >&2; exit 1; }

fi

if [ -z "${INDEX_CONFIG:-}" ] && [ -n "${INDEX_ROWS:-}" ]; then
  mkdir -p "$WORK/index"
  python3 scripts/bench_index.py "$WORK/index/index.sqlite" "$INDEX_ROWS"
  printf '[modelarts]\nendpoint = "http://127.0.0.1:1"\nproject_id = "p"\n[jobs]\ndiscover = true\n[storage]\npath = "archive"\n[index]\npath = "index.sqlite"\n' >"$WORK/index/malog.toml"
  INDEX_CONFIG=$WORK/index/malog.toml
fi
if [ -n "${INDEX_CONFIG:-}" ]; then
  # Each filter of the shared selection, with a value that selects a part of a
  # large index (and two that select much of it); the number of rows each
  # prints is in its label.
  python3 - "$BIN" "$INDEX_CONFIG" >"$WORK/filters.json" <<'PY'
import datetime, json, pathlib, shlex, sqlite3, subprocess, sys, tomllib
bin_, config = sys.argv[1:]
path = pathlib.Path(config)
db = sqlite3.connect(path.parent / tomllib.load(open(path, "rb"))["index"]["path"])
(jobs,) = db.execute("SELECT COUNT(*) FROM jobs").fetchone()
(tasks,) = db.execute("SELECT COUNT(*) FROM tasks").fetchone()
(job,) = db.execute("SELECT job_id FROM jobs ORDER BY created_at_ms LIMIT 1 OFFSET ?", (jobs // 2,)).fetchone()
newest, oldest = db.execute("SELECT MAX(created_at_ms), MIN(created_at_ms) FROM jobs").fetchone()
iso = lambda ms: datetime.datetime.fromtimestamp(ms / 1000, datetime.UTC).isoformat().replace("+00:00", "Z")
print(f"index: {tasks} tasks in {jobs} jobs", file=sys.stderr)
filters = [["--job", job], ["--name", "^gen-job-0000[0-9]$"], ["--phase", "Failed"],
           ["--since", iso(newest - 3_600_000)], ["--until", iso(oldest + 100_000)],
           ["--task", "worker-3", "--limit", "100"], ["--state", "failed"], ["--limit", "10"],
           ["--task", "worker-3"]]
spec = []
for f in filters:
    for cmd in ("jobs", "query"):
        argv = [bin_, "-c", config, cmd, *f, "--format", "json"]
        rows = len(json.loads(subprocess.run(argv, check=True, capture_output=True).stdout))
        spec.append({"label": f"{cmd} {' '.join(f)} ({rows} rows)", "cmd": shlex.join(argv) + " > /dev/null"})
print(json.dumps(spec))
PY
  echo "# filters"
  python3 scripts/bench_timer.py "$RUNS" "$WORK/filters.json"
fi
echo "raw timings: $WORK"
