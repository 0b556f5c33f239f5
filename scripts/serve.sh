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

# in_workdir: makes $work, a temporary directory the private cluster can
# enter (it runs as `postgres` when we are root), and removes it on exit,
# after stopping the server and gateway started by these helpers.
in_workdir() {
  work=$(mktemp -d)
  chmod 755 "$work"
  trap stop_all EXIT
}

stop_all() {
  kill "${server:-}" "${gateway_pid:-}" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}

# start_gateway PORT: runs the fake gateway (`tally gateway-sim`) on PORT,
# with its log in $work/gateway.log.
start_gateway() {
  "$bin" gateway-sim --listen "127.0.0.1:$1" >"$work/gateway.log" 2>&1 &
  gateway_pid=$!
}
