#!/usr/bin/env bash
# The web page's speed (issue 17): first byte and full response, measured by
# curl, of the jobs page over an index of JOBS jobs (its first page, its last
# page, one job's page) and of a SIZE-byte log's first and last page ("end"),
# stored plain and with zstd. Results go into docs/BENCHMARKS.md by hand.
#
#   scripts/bench_web.sh           100,000 jobs (x 10 task rows, made by
#                                  scripts/bench_index.py) and one 1 GiB log
#                                  (the simulator's, archived by malog backfill)
#   scripts/bench_web.sh --smoke   tiny sizes, 2 rounds, the debug binary
#   MALOG_BIN=PATH ...             that binary instead of building one
#   RUNS=N JOBS=N SIZE=BYTES ...   other sizes (RUNS rounds, at least 5 for figures)
#   KEEP=1 ...                     keep the generated data (deleted by default)
#
# Each round starts `malog web` afresh on a free port of 127.0.0.1 for each of
# the three data sets and asks for every page twice: the first request after
# the start is "cold" (no line-count checkpoints: the log's end page counts
# every newline before it; the index's pages are not in SQLite's cache) and the
# second "warm". The files themselves are in the page cache for both. Every
# sample records the 1-minute load average, since the machine may be shared.
# Needs: curl, python3.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

RUNS=${RUNS:-5}
JOBS=${JOBS:-100000}
SIZE=${SIZE:-$((1 << 30))}
if [ "${1:-}" = "--smoke" ]; then
  RUNS=2 JOBS=200 SIZE=$((4 << 20))
fi
. scripts/bench_sim.sh
pick_binary "${1:-}"

WORK=$(mktemp -d /tmp/malog-bench-web.XXXXXX)
SIM_PID=
WEB_PID=
cleanup() {
  [ -n "$SIM_PID" ] && kill "$SIM_PID" 2>/dev/null || true
  [ -n "$WEB_PID" ] && kill "$WEB_PID" 2>/dev/null || true
  if [ "${KEEP:-0}" = 1 ]; then echo "data kept in $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(uname -r); rounds: $RUNS; $(uptime)"

# (a) An index of JOBS jobs; no archive behind it (the jobs and job pages
# read only the index).
started=$(date +%s)
mkdir -p "$WORK/jobs"
python3 scripts/bench_index.py "$WORK/jobs/index.sqlite" $((JOBS * 10))
printf '[modelarts]\nendpoint = "http://127.0.0.1:1"\nproject_id = "p"\n[jobs]\ndiscover = true\n[storage]\npath = "archive"\n[index]\npath = "index.sqlite"\n' >"$WORK/jobs/malog.toml"
echo "index of $JOBS jobs: $(($(date +%s) - started)) s"

# (b) One log of SIZE bytes, archived plain and with zstd by malog itself.
started=$(date +%s)
start_simulator "$BIN" 1 1 "$SIZE" "$WORK/sim.log"
backfill_archive "$BIN" "$WORK/plain" none
backfill_archive "$BIN" "$WORK/zstd" zstd
kill "$SIM_PID"; wait "$SIM_PID" 2>/dev/null || true; SIM_PID=
read -r LOG_JOB LOG_TASK < <("$BIN" -c "$WORK/plain/malog.toml" query --format json |
  python3 -c 'import json, sys; r = json.load(sys.stdin)[0]; print(r["job_id"], r["task_id"])')
for set in plain zstd; do
  echo "$set archive: $(du -sb "$WORK/$set/archive" | cut -f1) bytes"
done
echo "log of $SIZE bytes archived plain and zstd: $(($(date +%s) - started)) s"

# serve SET: starts `malog web` on SET's config; sets WEB_PID and BASE.
serve() {
  local port
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  "$BIN" -c "$WORK/$1/malog.toml" web --listen "127.0.0.1:$port" >"$WORK/web-$1.log" 2>&1 &
  WEB_PID=$!
  BASE=http://127.0.0.1:$port
  for _ in $(seq 1 600); do
    curl -s -o /dev/null "$BASE/style.css" && return
    kill -0 "$WEB_PID" 2>/dev/null || break
    sleep 0.1
  done
  echo "malog web did not start: $(cat "$WORK/web-$1.log")" >&2
  exit 1
}
stop() {
  echo "$1 $(awk '/VmHWM/ {print $2}' "/proc/$WEB_PID/status")" >>"$WORK/rss.txt"
  kill "$WEB_PID"; wait "$WEB_PID" 2>/dev/null || true; WEB_PID=
}

# fetch LABEL TEMPERATURE PATH EXPECT: one request; the page must hold EXPECT
# (an extended regular expression), so an error page cannot pass for a page.
fetch() {
  local timing
  timing=$(curl -sS -f -o "$WORK/page.html" -w '%{time_starttransfer} %{time_total} %{size_download}' "$BASE$3")
  grep -Eq "$4" "$WORK/page.html" || {
    echo "$1 ($3): the page lacks /$4/" >&2
    exit 1
  }
  printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$timing" "$(cut -d' ' -f1 /proc/loadavg)" >>"$WORK/samples.tsv"
}
# twice LABEL PATH EXPECT: the cold request, then the warm one.
twice() {
  fetch "$1" cold "$2" "$3"
  fetch "$1" warm "$2" "$3"
}

LAST_PAGE=$(((JOBS + 49) / 50))
MIDDLE_JOB=$(printf 'job-%08d' $((JOBS / 2)))
LOG=/jobs/$LOG_JOB/tasks/$LOG_TASK/log
# The end page shows line numbers (counted in the request) and ends at the log's end.
END="lines [0-9]+–[0-9]+ · bytes [0-9]+–$SIZE of $SIZE"
for round in $(seq 1 "$RUNS"); do
  echo "round $round: $(cut -d' ' -f1-3 /proc/loadavg)"
  serve jobs
  twice "/jobs (first page)" /jobs 'gen-job-[0-9]+'
  twice "/jobs?page=$LAST_PAGE (last page)" "/jobs?page=$LAST_PAGE" 'gen-job-00000'
  twice "/jobs/$MIDDLE_JOB (job page)" "/jobs/$MIDDLE_JOB" 'worker-9'
  stop jobs
  for set in plain zstd; do
    serve "$set"
    twice "log end (?at=end), $set" "$LOG?at=end" "$END"
    twice "log start (?from=0), $set" "$LOG?from=0" 'lines 1–'
    twice "job page of the log, $set" "/jobs/$LOG_JOB" "$LOG_TASK"
    stop "$set"
  done
done

echo "$(uptime)"
echo "peak RSS of malog web (KiB), per start:"
sort "$WORK/rss.txt" | awk '{a[$1] = a[$1] " " $2} END {for (k in a) print "  " k ":" a[k]}'
echo
python3 - "$WORK/samples.tsv" "$RUNS" <<'PY'
import statistics, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
order, samples = [], {}
for label, temp, timing, load in rows:
    first, total, size = timing.split()
    key = (label, temp)
    if key not in samples:
        order.append(key)
        samples[key] = []
    samples[key].append((float(first), float(total), int(size), float(load)))

def fmt(values):
    m = statistics.median(values)
    return f"{m * 1000:.1f} ms ({min(values) * 1000:.1f}–{max(values) * 1000:.1f})"

print(f"| page | first byte, median (range) | full, median (range) | bytes | cold/warm | load (1 min) | runs |")
print("|---|---|---|---|---|---|---|")
for label, temp in order:
    s = samples[(label, temp)]
    loads = [x[3] for x in s]
    print(f"| {label} | {fmt([x[0] for x in s])} | {fmt([x[1] for x in s])} | {s[0][2]} | {temp}"
          f" | {statistics.median(loads):.2f} ({min(loads):.2f}–{max(loads):.2f}) | {len(s)} |")
PY
