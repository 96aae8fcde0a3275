#!/usr/bin/env bash
# Memory at scale: a real first pass (not a dry run) over JOBS jobs x 8 small
# logs served by the project's simulator on 127.0.0.1, then `query --format
# json` and `verify --metadata-only` over the index it wrote. Prints one line
# per command: "command | tasks | wall s | CPU s | peak RSS MiB | s per 100,000
# tasks", and writes the first pass's RSS once a second to $WORK/rss.trace
# ("seconds RSS-KiB"), which shows when memory grows. The index is kept, for
# scripts/bench_read.sh (INDEX_CONFIG). Results go into docs/BENCHMARKS.md by hand.
#
#   scripts/bench_memory.sh                 JOBS=12500 (100,000 tasks)
#   JOBS=125000 scripts/bench_memory.sh     the 1,000,000-task target
#   scripts/bench_memory.sh --smoke         200 jobs, the debug binary (seconds)
#   RECORDS=true scripts/bench_memory.sh    also archive each job's events and
#                                           metrics ([jobs] archive_events and
#                                           archive_metrics; off by default here:
#                                           1 + TASKS API calls and two files per
#                                           job, which would dominate the time)
#   MALLOC_ARENA_MAX=2 ...                  passed through to malog (glibc)
#   MALOG_BIN=PATH ...                      that binary instead of building one
#
# Needs: curl, python3, /usr/bin/time. Listens on a free port of 127.0.0.1 only.
set -euo pipefail
cd "$(dirname "$0")/.."

JOBS=${JOBS:-12500}
TASKS=8
SIZE=${SIZE:-256}
RECORDS=${RECORDS:-false}
if [ "${1:-}" = "--smoke" ]; then
  JOBS=200
fi
. scripts/bench_sim.sh
pick_binary "${1:-}"

WORK=$(mktemp -d /tmp/malog-bench-memory.XXXXXX)
SIM_PID=
cleanup() {
  [ -n "$SIM_PID" ] && kill "$SIM_PID" 2>/dev/null || true
  rm -rf "$WORK/archive"
}
trap cleanup EXIT

start_simulator "$BIN" "$JOBS" "$TASKS" "$SIZE" "$WORK/sim.log"

cat >"$WORK/malog.toml" <<TOML
[modelarts]
endpoint = "http://127.0.0.1:$PORT"
project_id = "0b2f0c5e8a0f4b6e9c1d2e3f4a5b6c7d"
requests_per_second = 100000
[jobs]
discover = true
archive_events = $RECORDS
archive_metrics = $RECORDS
[fetch]
concurrency = 16
[storage]
path = "archive"
sync = "filesystem"
[index]
path = "index.sqlite"
TOML

TASKS_TOTAL=$((JOBS * TASKS))
# timed NAME CMD...: one line "NAME | tasks | wall | cpu | rss MiB | s per
# 100,000 tasks"; output in $WORK/NAME.out, RSS once a second in $WORK/NAME.rss.
timed() {
  local name=$1; shift
  local start
  start=$(date +%s.%N)
  /usr/bin/time -f "%e %M %U %S" -o "$WORK/time" "$@" >"$WORK/$name.out" 2>>"$WORK/stderr.log" &
  local timer=$! child=""
  : >"$WORK/$name.rss"
  while kill -0 "$timer" 2>/dev/null; do
    [ -n "$child" ] || child=$(pgrep -P "$timer" || true)
    [ -n "$child" ] && awk -v t="$(date +%s.%N)" -v s="$start" '/^VmRSS/ {printf "%.0f %d\n", t - s, $2}' "/proc/$child/status" >>"$WORK/$name.rss" 2>/dev/null || true
    sleep 1
  done
  wait "$timer"
  read -r wall rss user sys <"$WORK/time"
  printf '%s | %d | %s | %s | %d | %s\n' "$name" "$TASKS_TOTAL" "$wall" "$(python3 -c "print(round($user + $sys, 1))")" $((rss / 1024)) \
    "$(python3 -c "print(round($wall * 100000 / $TASKS_TOTAL, 1))")"
}

echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB; $JOBS jobs x $TASKS logs of $SIZE bytes; events and metrics: $RECORDS; MALLOC_ARENA_MAX=${MALLOC_ARENA_MAX:-unset}"
echo "command | tasks | wall s | CPU s | peak RSS MiB | s per 100,000 tasks"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
timed "backfill (first pass)" "$BIN" -c "$WORK/malog.toml" backfill --format json
fetched=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["fetched"])' "$WORK/backfill (first pass).out")
[ "$fetched" = "$TASKS_TOTAL" ] || { echo "fetched $fetched logs, expected $TASKS_TOTAL" >&2; exit 1; }
echo "load average after the pass: $(cut -d' ' -f1-3 /proc/loadavg)"
timed "query --format json" "$BIN" -c "$WORK/malog.toml" query --format json
rows=$(python3 -c 'import json, sys; print(len(json.load(open(sys.argv[1]))))' "$WORK/query --format json.out")
[ "$rows" = "$TASKS_TOTAL" ] || { echo "query printed $rows rows, expected $TASKS_TOTAL" >&2; exit 1; }
timed "verify --metadata-only" "$BIN" -c "$WORK/malog.toml" verify --metadata-only --format json
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "raw output and the index (INDEX_CONFIG=$WORK/malog.toml): $WORK"
