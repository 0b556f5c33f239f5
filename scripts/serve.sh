# Sourced by the measurement scripts: one way to start `tally serve` and wait
# for it. Not a script of its own.

# start_serve LOG ARGS...: runs `$bin ARGS...` in the background with its
# output in LOG, sets $server to its pid, and returns once it listens. A
# server that does not listen within 60 s fails the calling script, with its
# log on stderr.
start_serve() {
  local log=$1
  shift
  "$bin" "$@" >"$log" 2>&1 &
  server=$!
  for _ in $(seq 1 120); do
    grep -q "tally listening" "$log" && return 0
    sleep 0.5
  done
  echo "tally $* did not start:" >&2
  cat "$log" >&2
  exit 1
}
