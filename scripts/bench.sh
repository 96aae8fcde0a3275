#!/usr/bin/env bash
# Side-by-side benchmark of malog against what a user would otherwise run, on one
# machine, against the project's simulator on 127.0.0.1. The simulator answers the
# API; for cases 1-3 its links point at nginx serving the same logs as static
# files (`malog simulate --export/--links-to`), so every contender downloads
# from the same fast source. Prints one line per measurement ("case | contender |
# median wall s | CPU s | peak RSS MiB | page cache growth MiB | note") and keeps
# raw timings in $WORK. Results go into docs/BENCHMARKS.md by hand.
#
# Every run writes into a fresh folder and nothing is deleted until the end:
# ext4 makes creating files slow for a while after many were deleted (it avoids
# reusing recently freed inodes), which would charge one run for the last one's
# cleanup.
#
#   scripts/bench.sh            all cases, RUNS=3 runs each (medians)
#   CASES="1 2" scripts/bench.sh  only those cases (2 includes its rerun, case 3;
#                               7, growing logs, is not in the default set: it
#                               writes 16 GiB, run it with CASES=7; C7_SIZE and
#                               C7_GROWTH override its sizes)
#   scripts/bench.sh --smoke    tiny sizes, one run, the debug binary: keeps the
#                               script working in CI (seconds)
#   MALOG_BIN=PATH ...          that binary instead of building one (a commit
#                               rebuilds the crate: it embeds the commit)
#
# Needs: curl, python3, /usr/bin/time, strace (case 7); rclone and nginx (installed with apt-get
# when missing and running as root). Listens on free ports of 127.0.0.1 only.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

SMOKE=0
[ "${1:-}" = "--smoke" ] && SMOKE=1
RUNS=${RUNS:-3}
CASES=${CASES:-1 2 4 5 6}
want() { [[ " $CASES " == *" $1 "* ]]; }
[ "$SMOKE" = 1 ] && RUNS=1
. scripts/bench_sim.sh
pick_binary "${1:-}"

if { want 1 || want 2; } && { ! command -v rclone >/dev/null || ! command -v nginx >/dev/null; }; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get install -y rclone nginx-light >/dev/null 2>&1 \
      || { apt-get update >/dev/null 2>&1 && apt-get install -y rclone nginx-light >/dev/null 2>&1; } || true
  fi
fi

WORK=$(mktemp -d "${BENCH_DIR:-/tmp}/malog-bench.XXXXXX")
chmod 755 "$WORK" # nginx's workers serve files from here
PIDS=()
cleanup() {
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  rm -rf "$WORK/data" "$WORK/src"
}
trap cleanup EXIT
mkdir -p "$WORK/data" "$WORK/src"
fresh() { mktemp -d "$WORK/data/$1.XXXXXX"; } # a new folder per run

# The simulator's made-up keys (SimConfig::default()).
export MODELARTS_PROJECT=0b2f0c5e8a0f4b6e9c1d2e3f4a5b6c7d
export HUAWEICLOUD_SDK_AK=SIMULATORAK000000001
export HUAWEICLOUD_SDK_SK=simulator-secret-key-not-a-real-one

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

say() { printf '%s\n' "$*" | tee -a "$WORK/results.txt"; }

median() { sort -n | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else printf "%.3f\n", (a[NR/2]+a[NR/2+1])/2}'; }

wait_port() {
  for _ in $(seq 1 200); do
    curl -s -o /dev/null "http://127.0.0.1:$1/" && return 0
    sleep 0.05
  done
  echo "nothing listens on port $1" >&2
  return 1
}

start_sim() { # jobs tasks size [simulate options...]
  stop_sim
  SIM_PORT=$(free_port)
  export MODELARTS_ENDPOINT=http://127.0.0.1:$SIM_PORT
  local jobs=$1 tasks=$2 size=$3; shift 3
  "$BIN" simulate --listen "127.0.0.1:$SIM_PORT" --jobs "$jobs" --tasks "$tasks" --size "$size" "$@" >"$WORK/sim.log" 2>&1 &
  SIM_PID=$!
  PIDS+=("$SIM_PID")
  wait_port "$SIM_PORT"
  # Whoever answered must be our simulator, not a stray server on that port.
  kill -0 "$SIM_PID" 2>/dev/null || { echo "the simulator did not start: $(cat "$WORK/sim.log")" >&2; exit 1; }
}
# A simulator whose links point at nginx, serving the logs it exported to $WORK/src/NAME.
start_sim_nginx() { # name jobs tasks size
  start_sim "$2" "$3" "$4" --export "$WORK/src/$1" --links-to "http://127.0.0.1:$NGINX_PORT/$1"
}
sim_stats() { curl -s "$MODELARTS_ENDPOINT/sim/stats"; }
sim_stat() { sim_stats | python3 -c "import json, sys; print(json.load(sys.stdin)['$1'])"; }
stop_sim() {
  if [ -n "${SIM_PID:-}" ]; then kill "$SIM_PID" 2>/dev/null || true; wait "$SIM_PID" 2>/dev/null || true; SIM_PID=; fi
}

config() { # dir -> a config for a fresh archive and index in dir
  mkdir -p "$1"
  cat >"$1/malog.toml" <<TOML
[modelarts]
endpoint = "$MODELARTS_ENDPOINT"
project_id = "$MODELARTS_PROJECT"
requests_per_second = 100000
[jobs]
discover = true
[fetch]
concurrency = 16
[storage]
path = "archive"
${STORAGE_EXTRA:-}
[index]
path = "index.sqlite"
TOML
  echo "$1/malog.toml"
}

cached_kib() { awk '/^Cached:/ {print $2}' /proc/meminfo; }

# timed LABEL CMD...: runs CMD, appends "wall rss_kib cpu_s cache_growth_kib"
# to $WORK/LABEL; its output goes to $WORK/LABEL.out. CPU is the command's own
# (user + system, children included); cache growth is how much the page cache
# grew over the run (machine-wide: what the run left the host holding).
timed() {
  local label=$1; shift
  local before
  before=$(cached_kib)
  /usr/bin/time -f "%e %M %U %S" -o "$WORK/t.$$" "$@" >"$WORK/$label.out" 2>>"$WORK/stderr.log"
  echo "$(awk '{printf "%s %s %.2f", $1, $2, $3 + $4}' "$WORK/t.$$") $(($(cached_kib) - before))" >>"$WORK/$label"
}
report() { # case contender label note
  local wall rss cpu cache
  wall=$(cut -d' ' -f1 "$WORK/$3" | median)
  rss=$(cut -d' ' -f2 "$WORK/$3" | median)
  cpu=$(cut -d' ' -f3 "$WORK/$3" | median)
  cache=$(cut -d' ' -f4 "$WORK/$3" | median)
  say "$1 | $2 | $wall | $cpu | $((rss / 1024)) | $(awk -v k="$cache" 'BEGIN {printf "%d", k / 1024}') | $4"
}

# malog_backfill LABEL DIR EXPECTED: a timed backfill that must fetch EXPECTED logs
# (a benchmark that silently measured a no-op would be worthless).
malog_backfill() {
  local label=$1 dir=$2 expected=$3
  timed "$label" "$BIN" -c "$dir/malog.toml" backfill --format json
  local fetched
  fetched=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["fetched"])' "$WORK/$label.out")
  [ "$fetched" = "$expected" ] || { echo "$label: fetched $fetched logs, expected $expected" >&2; exit 1; }
}

if [ "$SMOKE" = 1 ]; then
  BIG=$((4 << 20)); SIZES="$((1 << 20))"; C2_JOBS=20; C5_JOBS=200; C6_ROWS=20000
  C7_SIZE=${C7_SIZE:-$((4 << 20))}; C7_GROWTH=${C7_GROWTH:-$((256 << 10))}
else
  BIG=$((1 << 30)); SIZES="$((1 << 20)) $((100 << 20)) $((1 << 30))"; C2_JOBS=1000; C5_JOBS=100000; C6_ROWS=1000000
  C7_SIZE=${C7_SIZE:-$((512 << 20))}; C7_GROWTH=${C7_GROWTH:-$((8 << 20))}
fi
say "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(uname -r); runs per case: $RUNS"
say "case | contender | median wall s | CPU s | peak RSS MiB | page cache growth MiB | note"

# nginx serves the exported logs (cases 1-3): the floor for moving bytes.
if want 1 || want 2; then
command -v nginx >/dev/null || { echo "nginx is needed (apt-get install nginx-light)" >&2; exit 1; }
NGINX_PORT=$(free_port)
cat >"$WORK/nginx.conf" <<NGINX
daemon off; worker_processes 2; pid $WORK/nginx.pid; error_log $WORK/nginx-error.log;
events { worker_connections 1024; }
http { access_log off; sendfile on; server { listen 127.0.0.1:$NGINX_PORT; root $WORK/src; autoindex on; } }
NGINX
nginx -c "$WORK/nginx.conf" &
PIDS+=($!)
wait_port "$NGINX_PORT"
fi

if want 1; then
  # Case 1: one large log, every contender in turn, RUNS times.
  start_sim_nginx c1 1 1 "$BIG"
  python3 scripts/modelarts_link.py list >"$WORK/c1-tasks.txt"
  job_task=$(head -1 "$WORK/c1-tasks.txt")
  for _ in $(seq "$RUNS"); do
    dir=$(dirname "$(config "$(fresh c1)")")
    malog_backfill c1.malog "$dir" 1
    out=$(fresh c1-curl); mkdir -p "$out"
    url=$(python3 scripts/modelarts_link.py link $job_task)
    # `sync FILE` makes that one file durable, as malog does; a bare `sync` would
    # also wait for every other dirty page on the machine.
    timed c1.curl sh -c "curl -s -o '$out/c1.log' '$url' && sync '$out/c1.log'"
    out=$(fresh c1-tee); mkdir -p "$out"
    url=$(python3 scripts/modelarts_link.py link $job_task)
    timed c1.tee sh -c "curl -s '$url' | tee '$out/c1.log' | sha256sum"
    # The disk's own floor: writing as many bytes and fsyncing them, no network.
    out=$(fresh c1-dd)
    timed c1.dd dd if=/dev/zero of="$out/zero" bs=1M count=$((BIG >> 20)) conv=fsync status=none
  done
  report 1 malog c1.malog "$((BIG >> 20)) MiB log: link + download + sha256 + fsync + index"
  report 1 "curl -o file && sync file" c1.curl ""
  report 1 "curl | tee | sha256sum" c1.tee ""
  report 1 "dd conv=fsync (the disk alone)" c1.dd "same size, from /dev/zero"
  for size in $SIZES; do
    start_sim_nginx "rss-$size" 1 1 "$size"
    dir=$(dirname "$(config "$(fresh rss)")")
    malog_backfill "rss.$size" "$dir" 1
    report 1 "malog peak RSS" "rss.$size" "log of $((size >> 20)) MiB"
  done
fi

if want 2; then
  # Case 2 and 3: many small logs, then a rerun with nothing changed (API requests
  # counted by the simulator).
  start_sim_nginx c2 "$C2_JOBS" 10 65536
  for _ in $(seq "$RUNS"); do
    dir=$(dirname "$(config "$(fresh c2)")")
    malog_backfill c2.malog "$dir" $((C2_JOBS * 10))
    curl -s -X POST "$MODELARTS_ENDPOINT/sim/reset-stats" >/dev/null
    timed c3.malog "$BIN" -c "$dir/malog.toml" backfill --format json
    c3_stats=$(sim_stats)
  done
  "$BIN" -c "$dir/malog.toml" backfill --format json >"$WORK/c3.json" 2>/dev/null
  report 2 malog c2.malog "$((C2_JOBS * 10)) logs of 64 KiB in $C2_JOBS jobs"
  for _ in $(seq "$RUNS"); do
    dir=$(dirname "$(STORAGE_EXTRA='sync = "filesystem"' config "$(fresh c2fs)")")
    malog_backfill c2.malog-fs "$dir" $((C2_JOBS * 10))
  done
  report 2 "malog, [storage] sync = \"filesystem\"" c2.malog-fs "one syncfs per batch instead of an fsync per log"
  report 3 "malog rerun" c3.malog "$(python3 -c 'import json, sys; r = json.load(open(sys.argv[1])); s = json.loads(sys.argv[2]); print("fetched %d, unchanged %d, sealed %d; API: %d searches, %d details, %d link requests; %d downloads" % (r["fetched"], r["unchanged"], r["sealed"], s["search_requests"], s["detail_requests"], s["link_requests"], s["downloads"]))' "$WORK/c3.json" "$c3_stats")"

  # What a user would script: sign and ask for every link (one Python process,
  # links live 5 minutes), then curl + sha256sum per log, 16 at a time.
  python3 scripts/modelarts_link.py list >"$WORK/tasks.txt"
  for _ in $(seq "$RUNS"); do
    DEST=$(fresh script); mkdir -p "$DEST"; export DEST
    timed c2.script sh -c "python3 scripts/modelarts_link.py links <'$WORK/tasks.txt' | xargs -P 16 -L 1 sh -c 'curl -s -o \"\$DEST/\$0-\$1.log\" \"\$2\" && sha256sum \"\$DEST/\$0-\$1.log\"'"
  done
  report 2 "script: links, then curl + sha256sum, xargs -P16" c2.script ""

  # rclone over http of the same files from nginx.
  if command -v rclone >/dev/null; then
    for _ in $(seq "$RUNS"); do
      out=$(fresh rclone)
      timed c2.rclone rclone copy --http-url "http://127.0.0.1:$NGINX_PORT/c2/" :http: "$out" --transfers 16
      timed c3.rclone rclone copy --http-url "http://127.0.0.1:$NGINX_PORT/c2/" :http: "$out" --transfers 16
    done
    report 2 "rclone copy --transfers 16 (http)" c2.rclone "download only, no API calls, no fsync"
    report 3 "rclone no-op copy" c3.rclone ""
  else
    say "2 | rclone | - | - | - | - | not installed"
  fi
fi

if want 4; then
  # Case 4: 1 % of the logs change. Logs change only while their job runs: jobs
  # that ended are sealed and cost nothing, so the change is 10 running jobs of
  # the 1,000 whose 100 logs (1 %) grow. Bytes come from the simulator here (its
  # logs grow; nginx's files would not). Measured: a pass with nothing changed,
  # and a pass after the running jobs' logs grew.
  C4_RUNNING=$((C2_JOBS / 100)); [ "$C4_RUNNING" -gt 0 ] || C4_RUNNING=1
  start_sim "$C2_JOBS" 10 65536 --running "$C4_RUNNING"
  dir=$(dirname "$(config "$(fresh c4)")")
  "$BIN" -c "$dir/malog.toml" backfill --format json >/dev/null 2>>"$WORK/stderr.log"
  for _ in $(seq "$RUNS"); do
    curl -s -X POST "$MODELARTS_ENDPOINT/sim/reset-stats" >/dev/null
    timed c4.same "$BIN" -c "$dir/malog.toml" backfill --format json
    c4_same=$(sim_stats)
    touched=$(curl -s -X POST "$MODELARTS_ENDPOINT/sim/touch?every=1&phase=Running")
    curl -s -X POST "$MODELARTS_ENDPOINT/sim/reset-stats" >/dev/null
    timed c4.changed "$BIN" -c "$dir/malog.toml" backfill --format json
    c4_changed=$(sim_stats)
  done
  c4_note() { python3 -c 'import json, sys; s = json.loads(sys.argv[1]); print("%d link requests, %d downloads (%d bytes), %d not modified" % (s["link_requests"], s["downloads"], s["bytes_served"], s["not_modified"]))' "$1"; }
  report 4 "malog, nothing changed" c4.same "$(c4_note "$c4_same")"
  report 4 "malog, 1 % changed" c4.changed "$(c4_note "$c4_changed"); touched: $touched"
fi

if want 5; then
  # Case 5: listing a large project (no downloads).
  start_sim "$C5_JOBS" 8 1024
  dir=$(dirname "$(config "$(fresh c5)")")
  for _ in $(seq "$RUNS"); do
    timed c5.malog "$BIN" -c "$dir/malog.toml" backfill --dry-run --format json
  done
  report 5 "malog --dry-run" c5.malog "$C5_JOBS jobs x 8 tasks"
  stop_sim
fi

if want 6; then
  # Case 6: query one job on a large and a small index.
  for rows in 10000 "$C6_ROWS"; do
    d="$WORK/data/c6-$rows"; mkdir -p "$d"; dir=$(dirname "$(config "$d")")
    python3 scripts/bench_index.py "$d/index.sqlite" "$rows"
    "$BIN" -c "$dir/malog.toml" query --job job-00000007 --format json >/dev/null
    for _ in $(seq $((RUNS + 2))); do
      timed "c6.$rows" "$BIN" -c "$dir/malog.toml" query --job job-00000007 --format json
    done
    report 6 "malog query --job" "c6.$rows" "index of $rows rows"
  done
fi

if want 7; then
  # Case 7: growing logs. One running job, 16 tasks whose logs are C7_SIZE and
  # grow C7_GROWTH between passes. Measured per pass: wall time, bytes the
  # simulator served, and bytes malog wrote into the archive through user space
  # (write calls) and inside the kernel (copy_file_range), counted by strace
  # (seccomp-filtered: only those calls stop the process). The reference is a
  # pass downloading the same grown logs whole, as every pass did before: a
  # backfill of them into a fresh archive. Bytes come from the simulator (its
  # logs grow; nginx's files would not).
  command -v strace >/dev/null || { echo "case 7 needs strace" >&2; exit 1; }
  traced() { # label dir: a timed, traced backfill; appends "served user kernel downloaded covered"
    local label=$1 dir=$2
    rm -rf "$WORK/strace"; mkdir -p "$WORK/strace"
    curl -s -X POST "$MODELARTS_ENDPOINT/sim/reset-stats" >/dev/null
    timed "$label" strace -qq -f -ff --seccomp-bpf -y -s 0 -e signal=none \
      -e trace=write,pwrite64,writev,pwritev,pwritev2,copy_file_range -o "$WORK/strace/t" \
      "$BIN" -c "$dir/malog.toml" backfill --format json
    echo "$(sim_stat bytes_served) $(python3 scripts/strace_writes.py "$(realpath "$dir")/archive" "$WORK"/strace/t.*) $(python3 -c 'import json, sys; r = json.load(open(sys.argv[1])); print(r["downloaded"], r["bytes"])' "$WORK/$label.out")" >>"$WORK/$label.bytes"
  }
  start_sim 1 16 "$C7_SIZE" --running 1
  dir=$(dirname "$(config "$(fresh c7)")")
  malog_backfill c7.first "$dir" 16
  for _ in $(seq "$RUNS"); do
    curl -s -X POST "$MODELARTS_ENDPOINT/sim/touch?every=1&bytes=$C7_GROWTH" >/dev/null
    traced c7.delta "$dir"
  done
  # The reference: the grown logs downloaded whole, into a fresh archive each
  # run (removed after it: each holds 16 logs).
  for _ in $(seq "$RUNS"); do
    ref=$(dirname "$(config "$(fresh c7-full)")")
    traced c7.full "$ref"
    rm -rf "$ref"
  done
  c7_note() { # label: medians of "served user kernel downloaded covered", in MiB
    python3 -c 'import statistics, sys
rows = [list(map(int, l.split())) for l in open(sys.argv[1]) if l.strip()]
m = [statistics.median(c) / 2**20 for c in zip(*rows)]
print("served %.1f MiB, written through user space %.1f MiB, copied in the kernel %.1f MiB; summary: %.1f MiB downloaded for %.1f MiB of logs" % tuple(m))' "$WORK/$1.bytes"
  }
  report 7 "malog, logs grew $((C7_GROWTH >> 10)) KiB each" c7.delta "$(c7_note c7.delta)"
  report 7 "the same pass, logs downloaded whole" c7.full "$(c7_note c7.full)"
  stop_sim
fi

say "raw timings: $WORK"
