#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# SIGHUP reloads the config file: exports that left it are removed,
# new ones added, changed ones replaced, while a client of an unchanged
# export keeps reading and writing through every reload without an
# error.  A broken file is logged and the running exports keep serving;
# exports added with mirrorctl are not the file's to remove.
source "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires qemu-io --version
requires nbdinfo --version
requires $PY -c 'import nbd'

for n in 1 2 3 4 extra; do truncate -s 32M "$TESTDIR/d$n.img"; done

write_conf () {
  local n
  {
    for n in "$@"; do
      printf '[export vm%s]\npath = %s/d%s.img\n' "${n%:*}" "$TESTDIR" "${n%:*}"
      [[ $n != *:ro ]] || printf 'readonly = yes\n'
      printf '\n'
    done
  } > "$TESTDIR/r.conf.tmp"
  mv "$TESTDIR/r.conf.tmp" "$TESTDIR/r.conf"
}
reloads () { grep -c "reloaded $TESTDIR/r.conf" "$TESTDIR/r.log" || :; }
reloaded_since () { [ "$(reloads)" -gt "$1" ]; }
hup_and_wait () {
  local before
  before=$(reloads)
  kill -HUP "$(mirrord_pid r)"
  poll 20 reloaded_since "$before"
}
names () {
  ctl r --json status | $PY -c '
import json, sys
print(" ".join(sorted(e["name"] for e in json.load(sys.stdin)["exports"])))'
}

write_conf 1 2
start_mirrord r -c "$TESTDIR/r.conf"
[ "$(names)" = "vm1 vm2" ] || fail "initial exports: $(names)"
ctl r export add extra "$TESTDIR/dextra.img" >/dev/null

# A client of vm1 that reads and writes until told to stop, verifying
# everything it reads; it counts its rounds in a file.
cat > "$TESTDIR/client.py" <<'PY'
import nbd, os, sys
uri, progress, stop = sys.argv[1:]
h = nbd.NBD()
h.connect_uri(uri)
n = 0
while not os.path.exists(stop):
    off = (n % 256) * 131072
    data = (n % 251).to_bytes(1, "little") * 65536 + os.urandom(65536)
    h.pwrite(data, off)
    if h.pread(131072, off) != data:
        sys.exit("round %d: read back different data" % n)
    if n % 16 == 0:
        h.flush()
        with open(progress + ".tmp", "w") as f:
            f.write(str(n))
        os.rename(progress + ".tmp", progress)
    n += 1
h.flush()
h.shutdown()
print(n)
PY
$PY "$TESTDIR/client.py" "$(uri r vm1)" "$TESTDIR/progress" "$TESTDIR/stop" \
  > "$TESTDIR/client.out" 2> "$TESTDIR/client.err" &
client=$!
cleanup_fn "kill $client 2>/dev/null"
rounds () { cat "$TESTDIR/progress" 2>/dev/null || echo -1; }
advanced_past () { [ "$(rounds)" -gt "$1" ]; }
client_advances () {
  poll 20 advanced_past "$(rounds)" || fail "the vm1 client stalled: $(cat "$TESTDIR/client.err")"
}
client_advances

# A client of vm2, which the reload removes: it is disconnected.
$PY - "$(uri r vm2)" "$TESTDIR/vm2.ready" <<'PY' > "$TESTDIR/vm2.out" 2>&1 &
import nbd, sys, time
h = nbd.NBD()
h.connect_uri(sys.argv[1])
h.pwrite(b"\x22" * 4096, 0)
open(sys.argv[2], "w").close()
deadline = time.time() + 30
try:
    while time.time() < deadline:
        h.pread(4096, 0)
        time.sleep(0.01)
    print("still connected")
except nbd.Error as e:
    print("disconnected:", e.errno)
PY
vm2_client=$!
cleanup_fn "kill $vm2_client 2>/dev/null"
poll 20 test -e "$TESTDIR/vm2.ready"

# Reload 1: vm2 leaves, vm3 arrives.
write_conf 1 3
hup_and_wait
[ "$(names)" = "extra vm1 vm3" ] || fail "after reload 1: $(names)"
grep -q "reloaded $TESTDIR/r.conf: 1 export added, 1 removed" "$TESTDIR/r.log" \
  || fail "reload not logged as expected: $(grep reloaded "$TESTDIR/r.log")"
wait $vm2_client
grep -q '^disconnected' "$TESTDIR/vm2.out" || fail "vm2 client: $(cat "$TESTDIR/vm2.out")"
qemu-io -f raw -c 'write -P 0x33 0 1M' "$(uri r vm3)" | grep -q '^wrote 1048576' \
  || fail "vm3 not writable"
nbdinfo "$(uri r vm2)" >/dev/null 2>&1 && fail "vm2 still served"
client_advances

# Reload 2: vm3 changes (read-only now): it is replaced.  A client
# keeps the old vm3 busy: the image is open (and locked) until the
# client is gone, and the new vm3 opens it after that.
$PY - "$(uri r vm3)" "$TESTDIR/vm3.ready" <<'PY' > "$TESTDIR/vm3.out" 2>&1 &
import nbd, sys, time
h = nbd.NBD()
h.connect_uri(sys.argv[1])
open(sys.argv[2], "w").close()
deadline = time.time() + 30
try:
    while time.time() < deadline:
        h.pwrite(b"\x33" * 65536, 0)
        h.pread(65536, 65536)
    print("still connected")
except nbd.Error as e:
    print("disconnected:", e.errno)
PY
vm3_client=$!
cleanup_fn "kill $vm3_client 2>/dev/null"
poll 20 test -e "$TESTDIR/vm3.ready"
write_conf 1 3:ro
hup_and_wait
wait $vm3_client
grep -q '^disconnected' "$TESTDIR/vm3.out" || fail "vm3 client: $(cat "$TESTDIR/vm3.out")"
vm3_read_only () { nbdinfo "$(uri r vm3)" | grep -q 'is_read_only: true'; }
poll 20 vm3_read_only || fail "vm3 not replaced: $(grep 'reload' "$TESTDIR/r.log")"
[ "$(names)" = "extra vm1 vm3" ] || fail "after reload 2: $(names)"
client_advances

# A broken file: logged, nothing changes, everything keeps serving.
cp "$TESTDIR/r.conf" "$TESTDIR/good.conf"
printf '[export vm4]\npath = %s/d4.img\ncolour = red\n' "$TESTDIR" >> "$TESTDIR/r.conf"
kill -HUP "$(mirrord_pid r)"
poll 20 grep -q "reload failed, keeping the running configuration: $TESTDIR/r.conf:.*colour" \
  "$TESTDIR/r.log"
[ "$(names)" = "extra vm1 vm3" ] || fail "after a broken reload: $(names)"
qemu-io -f raw -r -c 'read -P 0x33 0 1M' "$(uri r vm3)" | grep -q '^read 1048576' \
  || fail "vm3 after a broken reload"
client_advances

# An export whose image is missing: logged, the rest applied.
write_conf 1 3:ro 4
rm "$TESTDIR/d4.img"
hup_and_wait
grep -q 'reload: export vm4: .*d4.img.*No such file' "$TESTDIR/r.log" \
  || fail "missing image not logged"
grep -q "reloaded $TESTDIR/r.conf: 0 exports added, 0 removed" "$TESTDIR/r.log" \
  || fail "partial reload not logged"
[ "$(names)" = "extra vm1 vm3" ] || fail "after a partial reload: $(names)"
client_advances

# The client saw no error at all.
touch "$TESTDIR/stop"
wait $client || fail "vm1 client failed: $(cat "$TESTDIR/client.err")"
[ "$(cat "$TESTDIR/client.out")" -gt 0 ] || fail "vm1 client did nothing"
ctl r --json status vm1 | $PY -c '
import json, sys
e = json.load(sys.stdin)["exports"][0]
assert e["from_config"] and e["clients"] == 0 and e["bytes_written"] > 0, e'
stop_mirrord r
exit 0
