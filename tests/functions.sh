# SPDX-License-Identifier: MIT
# Shared helpers for the integration tests (bash).
#
#   requires CMD...        skip the test (exit 77) unless CMD succeeds
#   cleanup_fn CMD...      run CMD at exit, last registered first
#   poll TIMEOUT CMD...    retry CMD until it succeeds; fail after TIMEOUT s
#   start_mirrord NAME ARGS...
#                          start a foreground mirrord with private sockets
#                          and state under $TESTDIR, wait until it answers
#                          on its control socket; stopped at exit
#   start_mirrord_tcp NAME ARGS...
#                          the same, also listening on a free TCP port
#                          of ${TCP_HOST:-127.0.0.1}, left in $PORT
#   free_port              a TCP port free on 127.0.0.1 just now
#   make_psk FILE USER     add a new random TLS-PSK key for USER to FILE
#                          (psktool's format; psktool itself if present)
#   stop_mirrord NAME      SIGTERM, wait, and fail unless it exited 0
#   kill9_mirrord NAME     SIGKILL and wait
#   uri NAME EXPORT        its NBD URI;  ctl NAME ARGS...: mirrorctl for it
#   fail MSG               print and exit 1
#   pid_traced PID, pid_untraced PID
#                          every / no thread of PID is ptraced (strace
#                          attached or gone: poll them)
#   strace_attach PID OUT ARGS...
#                          strace PID (and its threads) in the background
#                          with ARGS (e.g. -e inject=...), output in OUT;
#                          returns once attached; its pid in $spid
#   strace_detach PID      stop that strace; returns once it has let go
#   image_locks FILE       the bytes of FILE under OFD locks (QEMU's image
#                          locks, docs/locking.md), e.g. "100 101 201"
#
# The daemon runs as $MIRRORD, prefixed by $MIRRORD_WRAPPER if set
# (e.g. valgrind).  Nothing here sleeps for readiness: it polls.

set -e
set -o pipefail

: "${top_srcdir:=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
: "${top_builddir:=$top_srcdir}"
: "${MIRRORD:=$top_builddir/mirrord/mirrord}"
: "${MIRRORCTL:=$top_builddir/ctl/mirrorctl}"
PY=/usr/bin/python3
export PYTHONPATH="$top_srcdir/tests${PYTHONPATH:+:$PYTHONPATH}"

fail () { echo "FAIL: $0: $*" >&2; exit 1; }

requires () {
  "$@" >/dev/null 2>&1 || { echo "$0: test skipped: requires $*"; exit 77; }
}

_cleanup_fns=()
cleanup_fn () { _cleanup_fns+=("$*"); }
_run_cleanup () {
  local status=$? i log
  # A failed test shows what its daemons said: CI logs are all a reader gets.
  if [ "$status" -ne 0 ] && [ "$status" -ne 77 ] && [ -d "${TESTDIR:-}" ]; then
    for log in "$TESTDIR"/*.log; do
      [ -f "$log" ] || continue
      echo "---- last lines of $log" >&2
      tail -n 25 "$log" | tr -d '\000' >&2
    done
  fi
  for ((i=${#_cleanup_fns[@]}-1; i>=0; i--)); do
    eval "${_cleanup_fns[i]}" || :
  done
  exit $status
}
trap _run_cleanup EXIT
trap 'exit 130' INT TERM

TESTDIR=$(mktemp -d /tmp/mirrord-test.XXXXXX)
cleanup_fn "rm -rf '$TESTDIR'"

poll () {
  local timeout=$1; shift
  local deadline=$(( $(date +%s%N) + timeout * 1000000000 ))
  until "$@" >/dev/null 2>&1; do
    if (( $(date +%s%N) > deadline )); then
      echo "poll: timed out after ${timeout}s waiting for: $*" >&2
      return 1
    fi
    sleep 0.02
  done
}

declare -A _mirrord_pid

uri () { echo "nbd+unix:///$2?socket=$TESTDIR/$1.nbd"; }
ctl () { local n=$1; shift; "$MIRRORCTL" -s "$TESTDIR/$n.ctl" "$@"; }

_mirrord_alive () { kill -0 "${_mirrord_pid[$1]}" 2>/dev/null; }
_mirrord_ready () {
  _mirrord_alive "$1" || return 2
  ctl "$1" status >/dev/null 2>&1
}

# Starts mirrord NAME; returns 1 if it died during start-up.
_start_mirrord_try () {
  local name=$1; shift
  $MIRRORD_WRAPPER "$MIRRORD" -f \
    --nbd-socket "$TESTDIR/$name.nbd" --control "$TESTDIR/$name.ctl" \
    --state-dir "$TESTDIR/$name.state" "$@" >"$TESTDIR/$name.log" 2>&1 &
  _mirrord_pid[$name]=$!
  cleanup_fn "_kill_mirrord $name"
  local deadline=$(( $(date +%s%N) + 30000000000 ))
  until _mirrord_ready "$name"; do
    if ! _mirrord_alive "$name"; then
      wait "${_mirrord_pid[$name]}" 2>/dev/null || :
      _mirrord_pid[$name]=
      return 1
    fi
    if (( $(date +%s%N) > deadline )); then
      cat "$TESTDIR/$name.log" >&2
      fail "mirrord $name did not become ready"
    fi
    sleep 0.02
  done
}

start_mirrord () {
  _start_mirrord_try "$@" && return 0
  cat "$TESTDIR/$1.log" >&2
  fail "mirrord $1 died during start-up"
}

free_port () {
  $PY -c '
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])'
}

make_psk () {
  if command -v psktool >/dev/null; then
    psktool -u "$2" -p "$1" >/dev/null
  else
    printf '%s:%s\n' "$2" "$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')" >> "$1"
    chmod 600 "$1"
  fi
}

# Another process may take the port between free_port and the bind:
# then try another one.
start_mirrord_tcp () {
  local name=$1 try; shift
  for try in 1 2 3 4 5; do
    PORT=$(free_port)
    _start_mirrord_try "$name" --nbd-listen "${TCP_HOST:-127.0.0.1}:$PORT" "$@" \
      && return 0
    grep -q "Address already in use" "$TESTDIR/$name.log" || break
  done
  cat "$TESTDIR/$name.log" >&2
  fail "mirrord $name died during start-up"
}

mirrord_pid () { echo "${_mirrord_pid[$1]}"; }

_kill_mirrord () {
  local pid=${_mirrord_pid[$1]:-}
  [ -n "$pid" ] || return 0
  kill -TERM "$pid" 2>/dev/null || return 0
  wait "$pid" 2>/dev/null || :
}

stop_mirrord () {
  local name=$1 pid=${_mirrord_pid[$1]} status=0
  kill -TERM "$pid" 2>/dev/null || :   # it may be exiting already
  wait "$pid" || status=$?
  _mirrord_pid[$name]=
  if [ "$status" -ne 0 ]; then
    cat "$TESTDIR/$name.log" >&2
    fail "mirrord $name exited with status $status"
  fi
}

# kill9_mirrord NAME: SIGKILL, and wait until it is gone (its lock on
# the state directory with it).
kill9_mirrord () {
  local pid=${_mirrord_pid[$1]}
  kill -9 "$pid"
  wait "$pid" 2>/dev/null || :
  _mirrord_pid[$1]=
}

# expect_status CODE CMD...: run CMD, fail unless it exits with CODE.
expect_status () {
  local want=$1 got=0; shift
  "$@" || got=$?
  [ "$got" -eq "$want" ] || fail "'$*' exited $got, expected $want"
}

pid_traced () {
  local s
  for s in /proc/"$1"/task/*/status; do
    grep -q '^TracerPid:[[:space:]]*0$' "$s" && return 1
  done
  return 0
}
pid_untraced () {
  local s
  for s in /proc/"$1"/task/*/status; do
    grep -q '^TracerPid:[[:space:]]*0$' "$s" || return 1
  done
}
strace_attach () {
  local pid=$1 out=$2
  shift 2
  strace -qq -f -p "$pid" -o "$out" "$@" &
  spid=$!
  cleanup_fn "kill $spid 2>/dev/null"
  poll 20 pid_traced "$pid" || fail "strace did not attach"
}
strace_detach () {
  kill "$spid"
  wait "$spid" 2>/dev/null || :
  poll 20 pid_untraced "$1" || fail "strace did not detach"
}

image_locks () {
  awk -v ino=":$(stat -L -c %i "$1")" '$2 == "OFDLCK" && $6 ~ ino "$" {
      for (b = $7; b <= $8; b++) print b }' /proc/locks | sort -nu | xargs
}
