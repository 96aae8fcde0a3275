# Sourced by the benchmark scripts (from the repository's root): picks the
# malog binary, and starts the project's simulator on a free port of 127.0.0.1
# with generated jobs and waits until it answers.
#
#   pick_binary [--smoke]                      sets BIN
#   start_simulator BIN JOBS TASKS SIZE LOG   sets PORT and SIM_PID

# The simulator's made-up keys (SimConfig::default()).
export HUAWEICLOUD_SDK_AK=SIMULATORAK000000001
export HUAWEICLOUD_SDK_SK=simulator-secret-key-not-a-real-one

# $MALOG_BIN when set; else a debug build for --smoke (seconds), a release
# build otherwise.
pick_binary() {
  if [ -n "${MALOG_BIN:-}" ]; then
    BIN=$MALOG_BIN
  elif [ "${1:-}" = "--smoke" ]; then
    cargo build --quiet
    BIN=$PWD/target/debug/malog
  else
    cargo build --quiet --release
    BIN=$PWD/target/release/malog
  fi
}

start_simulator() {
  PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  "$1" simulate --listen "127.0.0.1:$PORT" --jobs "$2" --tasks "$3" --size "$4" >"$5" 2>&1 &
  SIM_PID=$!
  for _ in $(seq 1 600); do
    curl -s -o /dev/null "http://127.0.0.1:$PORT/" && break
    sleep 0.1
  done
  kill -0 "$SIM_PID" 2>/dev/null || { echo "the simulator did not start: $(cat "$5")" >&2; exit 1; }
}

# backfill_archive BIN DIR COMPRESSION: backfills the simulator's logs (at
# $PORT) into DIR/archive with DIR/index.sqlite (config DIR/malog.toml; the
# backfill's report in DIR.backfill.json), then reads the archive once so
# every reader finds it in the page cache (the backfill leaves nothing cached).
backfill_archive() {
  mkdir -p "$2"
  cat >"$2/malog.toml" <<TOML
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
compression = "$3"
[index]
path = "index.sqlite"
TOML
  "$1" -c "$2/malog.toml" backfill --format json >"$2.backfill.json"
  find "$2/archive" -type f -exec cat {} + >/dev/null
}
