#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Only the peer may replicate into a secondary (SPEC §3, §6.7).  A
# replication claim (an export name carrying a primary's role and
# generation) is accepted over TLS-PSK from the peer's username, over
# plaintext only with --insecure.  Tried as the users who can reach the
# sockets: a local process on the unix socket, a holder of another key
# in the file, an unprivileged user on loopback TCP.  Each forged write
# is counted: none may land, and the pair must not report "in sync"
# over data it never sent.
source "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
source "${top_srcdir:-$(dirname "$0")/..}/tests/ha-functions.sh"
requires qemu-io --version
requires $PY -c 'import nbd'

# forge SOCKET-OR-PORT GEN [TLS-USER]: connect with a claim of
# generation GEN and write 0xee at 1 MiB; prints accepted or refused.
forge () {
  $PY - "$TESTDIR" "$@" <<'PY'
import nbd, sys
testdir, where, gen = sys.argv[1:4]
user = sys.argv[4] if len(sys.argv) > 4 else None
h = nbd.NBD()
h.set_export_name("vm1@@mirrord-peer,role=primary,disk=uptodate,cur=%s,bm=0,"
                  "h0=0,h1=0,discard=0,insync=0" % gen)
try:
    if user:
        h.set_tls(nbd.TLS_REQUIRE)
        h.set_tls_psk_file(testdir + "/keys.psk")
        h.set_tls_username(user)
        h.connect_tcp("127.0.0.1", where)
    else:
        h.connect_unix(where)
    h.pwrite(b"\xee" * 65536, 1 << 20)
    h.flush()
except nbd.Error as e:
    print("refused:", e)
    sys.exit(0)
print("accepted")
PY
}
# holds IMG PATTERN OFFSET: IMG has 64 KiB of PATTERN at OFFSET.
holds () {
  qemu-io -f raw -r -U -c "read -P $2 $3 64k" "$1" >/dev/null 2>&1
}
gen_of () { hfield "$1" 'e["generation"]["current"]'; }

truncate -s 16M "$TESTDIR/a.img" "$TESTDIR/b.img"

# 1. Plaintext, without --insecure: no claim is accepted, not even the
# real primary's; the primary says why, and nothing reads as in sync.
start_mirrord b --export "vm1=$TESTDIR/b.img,role=secondary,peer=$(uri a vm1),peer-timeout=1"
start_mirrord a --export "vm1=$TESTDIR/a.img,role=primary,peer=$(uri b vm1),peer-timeout=1"
qemu-io -f raw -c 'write -P 0x11 0 1M' "$(uri a vm1)" >/dev/null
refusal='replication needs a TLS-PSK authenticated connection from the peer'
poll 20 grep -q "$refusal" "$TESTDIR/b.log" || fail "b did not refuse a's claim"
out=$(forge "$TESTDIR/b.nbd" "$(gen_of b)")
[[ $out == refused* ]] || fail "plaintext claim on the unix socket: $out"
holds "$TESTDIR/b.img" 0xee 1M && fail "a forged write landed on b"
holds "$TESTDIR/b.img" 0x11 0 && fail "replication went through without TLS or --insecure"
[ "$(hfield a 'e["peer"]["in_sync"] if e["peer"]["connected"] else False')" = False ] \
  || fail "a reports its peer in sync: $(hfield a e)"
ctl a --json status vm1 | grep -q 'needs a TLS-PSK' || ctl a --json status vm1 \
  | grep -q 'policy' || fail "a's status does not say why: $(ctl a --json status vm1)"
stop_mirrord a
stop_mirrord b
rm -rf "$TESTDIR/a.state" "$TESTDIR/b.state"

# 2. TLS-PSK on loopback TCP; the file holds the pair's key and alice's.
make_psk "$TESTDIR/keys.psk" pair
make_psk "$TESTDIR/keys.psk" alice
declare -A port=([a]=$(free_port) [b]=$(free_port))
[ "${port[a]}" != "${port[b]}" ] || port[b]=$(free_port)
member () {
  local other=a
  [ "$1" = a ] && other=b
  start_mirrord "$1" --tls-psk "$TESTDIR/keys.psk" --nbd-listen "127.0.0.1:${port[$1]}" \
    --export "vm1=$TESTDIR/$1.img,role=$2,peer=nbds://pair@127.0.0.1:${port[$other]}/vm1,peer-timeout=1"
}
member b secondary
member a primary
poll 30 pair_in_sync a || fail "the TLS pair never got in sync: $(hfield a e)"
holds "$TESTDIR/b.img" 0x11 0 || fail "the pair's own replication did not reach b"
gen=$(gen_of b)
# alice holds a key, but she is not b's peer.
out=$(forge "${port[b]}" "$gen" alice)
[[ $out == refused* ]] || fail "alice's claim over TLS: $out"
grep -q "replication refused from TLS-PSK user 'alice'" "$TESTDIR/b.log" \
  || fail "alice refused without saying why"
# A local process on b's unix socket, plaintext.
out=$(forge "$TESTDIR/b.nbd" "$gen")
[[ $out == refused* ]] || fail "plaintext claim next to a TLS pair: $out"
holds "$TESTDIR/b.img" 0xee 1M && fail "a forged write landed on b"
# The pair goes on: a new write through a reaches b, in sync.
qemu-io -f raw -c 'write -P 0x22 2M 64k' "$(uri a vm1)" >/dev/null
poll 30 pair_in_sync a || fail "pair out of sync after the forgeries"
holds "$TESTDIR/b.img" 0x22 2M || fail "a's write after the forgeries did not reach b"

# 3. An unprivileged local user (nobody) gets nowhere: TCP wants TLS
# and a key nobody can read; the unix socket is 0660 root.
if command -v setpriv >/dev/null && id nobody >/dev/null 2>&1; then
  chmod 755 "$TESTDIR"
  as_nobody () { setpriv --reuid=nobody --regid=nogroup --clear-groups "$@"; }
  as_nobody nbdinfo "nbd://127.0.0.1:${port[b]}/vm1" >/dev/null 2>&1 \
    && fail "nobody read b over plaintext TCP"
  as_nobody nbdinfo "nbd+unix:///vm1?socket=$TESTDIR/b.nbd" >/dev/null 2>&1 \
    && fail "nobody reached b's unix socket"
  chmod 700 "$TESTDIR"
fi
stop_mirrord a
stop_mirrord b

# 4. Plaintext TCP on loopback needs --insecure (exit 2 without), and
# then warns; it is the operator's choice, said out loud.
out=$("$MIRRORD" -f --export "vm1=$TESTDIR/a.img" --nbd-listen "127.0.0.1:${port[a]}" \
      --nbd-socket "$TESTDIR/x.nbd" --control "$TESTDIR/x.ctl" \
      --state-dir "$TESTDIR/x.state" 2>&1) && fail "plaintext loopback TCP accepted"
[[ $out == *"without --tls-psk"*"--insecure"* ]] || fail "refusal unclear: $out"
exit 0
