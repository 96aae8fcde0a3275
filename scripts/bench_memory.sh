#!/usr/bin/env bash
# Memory at scale: a real first pass (not a dry run) over JOBS jobs x 8 small
# logs served by the project's simulator on 127.0.0.1, then `query --format
# json` and `verify --metadata-only` over the index it wrote. Prints one line
# per command: "command | tasks | wall s | CPU s | peak RSS MiB", plus the
# time per 100,000 tasks of the pass. Results go into docs/BENCHMARKS.md by hand.
#
#   scripts/bench_memory.sh                 JOBS=12500 (100,000 tasks)
#   JOBS=125000 scripts/bench_memory.sh     the 1,000,000-task target
#   scripts/bench_memory.sh --smoke         200 jobs, the debug binary (seconds)
#
# Needs: curl, python3, /usr/bin/time. Listens on a free port of 127.0.0.1 only.
set -euo pipefail
cd "$(dirname "$0")/.."

JOBS=${JOBS:-12500}
TASKS=8
SIZE=${SIZE:-256}
if [ "${1:-}" = "--smoke" ]; then
  JOBS=200
  cargo build --quiet
  BIN=$PWD/target/debug/malog
else
  cargo build --quiet --release
  BIN=$PWD/target/release/malog
fi

WORK=$(mktemp -d /tmp/malog-bench-memory.XXXXXX)
SIM_PID=
cleanup() {
  [ -n "$SIM_PID" ] && kill "$SIM_PID" 2>/dev/null || true
  rm -rf "$WORK/archive"
}
trap cleanup EXIT

# The simulator's made-up keys (SimConfig::default()).
export HUAWEICLOUD_SDK_AK=SIMULATORAK000000001
export HUAWEICLOUD_SDK_SK=simulator-secret-key-not-a-real-one
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$BIN" simulate --listen "127.0.0.1:$PORT" --jobs "$JOBS" --tasks "$TASKS" --size "$SIZE" >"$WORK/sim.log" 2>&1 &
SIM_PID=$!
for _ in $(seq 1 600); do
  curl -s -o /dev/null "http://127.0.0.1:$PORT/" && break
  sleep 0.1
done
kill -0 "$SIM_PID" 2>/dev/null || { echo "the simulator did not start: $(cat "$WORK/sim.log")" >&2; exit 1; }

cat >"$WORK/malog.toml" <<TOML
[modelarts]
endpoint = "http://127.0.0.1:$PORT"
project_id = "0b2f0c5e8a0f4b6e9c1d2e3f4a5b6c7d"
requests_per_second = 100000
[jobs]
discover = true
[fetch]
concurrency = 16
[storage]
path = "archive"
sync = "filesystem"
[index]
path = "index.sqlite"
TOML

TASKS_TOTAL=$((JOBS * TASKS))
# timed NAME CMD...: one line "NAME | tasks | wall | cpu | rss MiB"; output in $WORK/NAME.out.
timed() {
  local name=$1; shift
  /usr/bin/time -f "%e %M %U %S" -o "$WORK/time" "$@" >"$WORK/$name.out" 2>>"$WORK/stderr.log"
  read -r wall rss user sys <"$WORK/time"
  printf '%s | %d | %s | %s | %d\n' "$name" "$TASKS_TOTAL" "$wall" "$(python3 -c "print(round($user + $sys, 1))")" $((rss / 1024))
  LAST_WALL=$wall
}

echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB; $JOBS jobs x $TASKS logs of $SIZE bytes"
echo "command | tasks | wall s | CPU s | peak RSS MiB"
timed "backfill (first pass)" "$BIN" -c "$WORK/malog.toml" backfill --format json
fetched=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["fetched"])' "$WORK/backfill (first pass).out")
[ "$fetched" = "$TASKS_TOTAL" ] || { echo "fetched $fetched logs, expected $TASKS_TOTAL" >&2; exit 1; }
echo "time per 100,000 tasks: $(python3 -c "print(round($LAST_WALL * 100000 / $TASKS_TOTAL, 1))") s"
timed "query --format json" "$BIN" -c "$WORK/malog.toml" query --format json
rows=$(python3 -c 'import json, sys; print(len(json.load(open(sys.argv[1]))))' "$WORK/query --format json.out")
[ "$rows" = "$TASKS_TOTAL" ] || { echo "query printed $rows rows, expected $TASKS_TOTAL" >&2; exit 1; }
timed "verify --metadata-only" "$BIN" -c "$WORK/malog.toml" verify --metadata-only --format json
echo "raw output: $WORK"
