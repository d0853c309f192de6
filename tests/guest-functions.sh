# SPDX-License-Identifier: MIT
# Helpers for the end-to-end tests: a real guest kernel (tests/guest/)
# under qemu-system-x86_64 (TCG), its disk an NBD export.
#
#   guest_requires         skip (77) without qemu-system or a guest;
#                          builds the guest (cached) into $GUEST_DIR
#   start_guest NAME SOCKET EXPORT KERNEL-ARGS [DRIVE-OPTS]
#                          boot it in the background; its console goes to
#                          $TESTDIR/NAME.console; stopped at exit
#   guest_lines NAME WORD  the console's "E2E WORD ..." lines, without CR
#   guest_acks NAME        how many writes it acknowledged
#   wait_guest NAME TIMEOUT
#                          wait until it powered off; fail unless it said
#                          "E2E DONE status=ok"
#   kill_guest NAME        kill -9 (the host died, or the VM is dropped)
#   check_acked ACKER VERIFIER
#                          every write ACKER acknowledged is on the disk
#                          VERIFIER read (its gen or a newer one), and no
#                          block is torn or foreign; prints the figures
#
# Live migration (docs/migration.md, ctl/mirrord-migrate):
#   start_guest_qmp NAME BLOCKDEV KERNEL-ARGS
#                          like start_guest, with a QMP monitor on
#                          $TESTDIR/NAME.qmp and the disk given as a
#                          whole -blockdev (its node must be d0)
#   dest_guest_cmd NAME BLOCKDEV KERNEL-ARGS
#                          $DEST_CMD: the shell command that starts the migration's
#                          destination QEMU (-incoming defer -S, the same
#                          machine) for mirrord-migrate --dst-exec; it
#                          writes its pid to $TESTDIR/NAME.pid; stopped at
#                          exit.  adopt_guest NAME makes kill_guest know it
#   start_migration_source NAME JOB
#                          a migration test's source: mirrord "m" exporting
#                          a fresh 64 MiB $TESTDIR/m.img as vm1, and the
#                          writer guest NAME (writeloop, JOB: seed and
#                          count) on it with start_guest_qmp; returns once
#                          it has acknowledged 10 writes
#   migrate_guest SRC DST JSON MIRRORD-MIGRATE-ARGS...
#                          live-migrate SRC (start_guest_qmp) to DST (the
#                          last dest_guest_cmd) with ctl/mirrord-migrate,
#                          over a unix socket; its figures (--json) in
#                          JSON, its progress in $TESTDIR/SRC.migrate
#   verify_migrated SRC DST BLOCKDEV JOB
#                          after migrate_guest: the source QEMU quits, the
#                          guest writes 20 more blocks on DST, DST is
#                          killed, a verifier (JOB: the writer's seed and
#                          count) boots on BLOCKDEV; check_migrated
#   guest_qmp NAME COMMAND [JSON-ARGS]
#                          one QMP command to guest NAME (a start_guest_qmp
#                          or dest_guest_cmd one); prints its return as JSON
#   migrated_console SRC DST
#                          the guest's serial output across the migration:
#                          the source's console, then the destination's
#   check_migrated SRC DST VERIFIER
#                          one boot, its write counter unbroken from SRC's
#                          console into DST's and going on there
#                          (check-running.awk), and every write acknowledged
#                          on either side on the disk VERIFIER read
#
# The guest's job is on its kernel command line (tests/guest/init):
# mirrord.mode=write|writeloop|verify mirrord.seed= mirrord.count= ...
# Set MIRRORD_SKIP_E2E=1 to skip these tests (run-tests.sh does for the
# sanitizer build: the guests' TCG minutes again, for daemon paths the
# block-level tests already run under ASan).

: "${GUEST_DIR:=$top_builddir/tests/guest}"
QEMU_SYSTEM=${QEMU_SYSTEM:-qemu-system-x86_64}
declare -A _guest_pid

guest_requires () {
  if [ -n "${MIRRORD_SKIP_E2E:-}" ]; then
    echo "$0: test skipped: MIRRORD_SKIP_E2E is set"; exit 77
  fi
  requires "$QEMU_SYSTEM" --version
  "$top_srcdir/tests/guest/build-guest.sh" "$GUEST_DIR" \
    || { echo "$0: test skipped: no test guest (see above)"; exit 77; }
}

# _guest_argv NAME KERNEL-ARGS BLOCKDEV: the guest's QEMU command line
# in _argv.  A migration's two QEMUs must describe the same machine:
# both are made here.  -nodefaults: no VGA, NIC or floppy to probe, so
# it boots faster.  no_timer_check: on a loaded host the TCG guest's
# timer can look broken to the kernel's IO-APIC check, which then
# panics in early boot (seen here: a trace through apic_intr_mode_init
# and x86_late_time_init).  $GUEST_RAM: MiB (default 256).
_guest_argv () {
  _argv=("$QEMU_SYSTEM" -accel tcg -nodefaults -no-user-config -display none
    -no-reboot -m "${GUEST_RAM:-256}" -serial "file:$TESTDIR/$1.console"
    -kernel "$GUEST_DIR/vmlinuz" -initrd "$GUEST_DIR/initrd.img"
    -append "console=ttyS0 quiet panic=-1 no_timer_check $2"
    -blockdev "$3" -device virtio-blk-pci,drive=d0)
}

_start_guest_argv () {
  local name=$1; shift
  : > "$TESTDIR/$name.console"
  "$@" </dev/null >"$TESTDIR/$name.qemu.log" 2>&1 &
  _guest_pid[$name]=$!
  cleanup_fn "kill_guest $name"
}

start_guest () {
  local name=$1 sock=$2 export=$3 args=$4 opts=${5:-}
  _guest_argv "$name" "$args" \
    "driver=nbd,node-name=d0,server.type=unix,server.path=$sock,export=$export$opts"
  _start_guest_argv "$name" "${_argv[@]}"
}

start_guest_qmp () {
  _guest_argv "$1" "$3" "$2"
  _start_guest_argv "$1" "${_argv[@]}" -qmp "unix:$TESTDIR/$1.qmp,server=on,wait=off"
}

dest_guest_cmd () {
  local name=$1 q
  _guest_argv "$name" "$3" "$2"
  : > "$TESTDIR/$name.console"
  rm -f "$TESTDIR/$name.pid"
  cleanup_fn "adopt_guest $name; kill_guest $name"
  printf -v DEST_CMD 'echo $$ > %q; exec' "$TESTDIR/$name.pid"
  printf -v q ' %q' "${_argv[@]}" -qmp "unix:$TESTDIR/$name.qmp,server=on,wait=off" \
    -incoming defer -S
  printf -v DEST_CMD '%s%s </dev/null >%q 2>&1' "$DEST_CMD" "$q" "$TESTDIR/$name.qemu.log"
}

adopt_guest () {
  [ -s "$TESTDIR/$1.pid" ] && _guest_pid[$1]=$(cat "$TESTDIR/$1.pid") || :
}

# A last line without its newline was cut short (the guest was killed
# while printing it): it is not counted.
guest_lines () {
  local f=$TESTDIR/$1.console
  if [ -n "$(tail -c 1 "$f")" ]; then sed '$d' "$f"; else cat "$f"; fi \
    | tr -d '\r' | grep "^E2E $2\b" || :
}
guest_acks () { guest_lines "$1" ACK | wc -l; }
_guest_acked_at_least () { [ "$(guest_acks "$1")" -ge "$2" ]; }
_guest_gone () { ! kill -0 "${_guest_pid[$1]}" 2>/dev/null; }

wait_guest () {
  local name=$1 timeout=$2
  if ! poll "$timeout" _guest_gone "$name"; then
    tail -20 "$TESTDIR/$name.console" >&2
    fail "guest $name did not power off within ${timeout}s"
  fi
  wait "${_guest_pid[$name]}" 2>/dev/null || :
  _guest_pid[$name]=
  if ! guest_lines "$name" DONE | grep -q 'status=ok'; then
    tail -20 "$TESTDIR/$name.console" "$TESTDIR/$name.qemu.log" >&2
    fail "guest $name did not finish its job"
  fi
}

kill_guest () {
  local pid=${_guest_pid[$1]:-}
  [ -n "$pid" ] || return 0
  kill -9 "$pid" 2>/dev/null || :
  wait "$pid" 2>/dev/null || :
  _guest_pid[$1]=
}

# tests/guest/check-acked.awk says how.
check_acked () {
  awk -f "$top_srcdir/tests/guest/check-acked.awk" \
    <(guest_lines "$1" ACK) <(guest_lines "$2" BLOCK)
}

start_migration_source () {
  truncate -s 64M "$TESTDIR/m.img"
  start_mirrord m --export "vm1=$TESTDIR/m.img"
  start_guest_qmp "$1" \
    "driver=nbd,node-name=d0,server.type=unix,server.path=$TESTDIR/m.nbd,export=vm1" \
    "mirrord.mode=writeloop $2"
  poll 180 _guest_acked_at_least "$1" 10 \
    || fail "the guest wrote nothing: $(tail -5 "$TESTDIR/$1.console")"
}

migrate_guest () {
  local src=$1 dst=$2 out=$3; shift 3
  if ! "$top_srcdir/ctl/mirrord-migrate" --src-qmp "$TESTDIR/$src.qmp" \
       --dst-qmp "$TESTDIR/$dst.qmp" --uri "unix:$TESTDIR/$src.mig" \
       --dst-exec "$DEST_CMD" --json "$@" > "$out" 2> "$TESTDIR/$src.migrate"; then
    grep -v 'starting QEMU' "$TESTDIR/$src.migrate" >&2
    return 1
  fi
  adopt_guest "$dst"
}

verify_migrated () {
  local src=$1 dst=$2 n
  poll 60 _guest_gone "$src" || fail "the source QEMU did not quit"
  wait "${_guest_pid[$src]}" 2>/dev/null || :
  _guest_pid[$src]=
  n=$(guest_acks "$dst")
  poll 300 _guest_acked_at_least "$dst" $((n + 20)) \
    || fail "the guest did not go on writing on $dst: $(tail -3 "$TESTDIR/$dst.console")"
  kill_guest "$dst"
  _guest_argv "$dst-v" "mirrord.mode=verify $4" "$3"
  _start_guest_argv "$dst-v" "${_argv[@]}"
  wait_guest "$dst-v" 300
  check_migrated "$src" "$dst" "$dst-v"
}

# mirrord-migrate's QMP client, loaded from the script.
guest_qmp () {
  local args='{}'
  [ -z "${3:-}" ] || args=$3
  $PY - "$top_srcdir/ctl/mirrord-migrate" "$TESTDIR/$1.qmp" "$2" "$args" <<'PY'
import importlib.machinery, importlib.util, json, sys
sys.dont_write_bytecode = True
loader = importlib.machinery.SourceFileLoader("mirrord_migrate", sys.argv[1])
mod = importlib.util.module_from_spec(importlib.util.spec_from_loader(loader.name, loader))
loader.exec_module(mod)
print(json.dumps(mod.QMP(sys.argv[2], 10).cmd(sys.argv[3], **json.loads(sys.argv[4]))))
PY
}

# As guest_lines, the destination's console appended to the source's
# (a line cut in two by the switch is whole again).
migrated_console () {
  local f=$TESTDIR/$1+$2.console
  cat "$TESTDIR/$1.console" "$TESTDIR/$2.console" > "$f"
  if [ -n "$(tail -c 1 "$f")" ]; then sed '$d' "$f"; else cat "$f"; fi | tr -d '\r'
}

check_migrated () {
  local before
  before=$(( $(guest_lines "$1" ACK | wc -l) + $(guest_lines "$1" IOERR | wc -l) ))
  migrated_console "$1" "$2" | grep -E '^E2E (READY|ACK|IOERR)\b' \
    | awk -v boundary="$before" -f "$top_srcdir/tests/guest/check-running.awk" \
    || return 1
  awk -f "$top_srcdir/tests/guest/check-acked.awk" \
    <(migrated_console "$1" "$2" | grep '^E2E ACK\b') <(guest_lines "$3" BLOCK)
}
