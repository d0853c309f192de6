#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The systemd unit (systemd/mirrord.service.in): make install puts it
# in the unit directory with the installed binary's path, and
# `systemd-analyze verify` finds nothing wrong with it, its
# Documentation= pages included.  The unit is checked, not run: the
# test machine's PID 1 need not be systemd.
source "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires systemd-analyze --version
requires man --version

root=$TESTDIR/root
make -s -C "$top_builddir" install DESTDIR="$root" >"$TESTDIR/install.log" 2>&1 \
  || { cat "$TESTDIR/install.log"; fail "make install failed"; }
unit=$(find "$root" -name mirrord.service -path '*/systemd/system/*')
[ -n "$unit" ] || fail "mirrord.service not installed"
exec_start=$(sed -n 's/^ExecStart=\([^ ]*\).*/\1/p' "$unit")
[ -x "$root$exec_start" ] || fail "ExecStart=$exec_start is not the installed mirrord"
for key in Type=forking PIDFile= ExecReload= RuntimeDirectory=mirrord \
           StateDirectory=mirrord ProtectSystem= PrivateTmp=yes \
           CapabilityBoundingSet= NoNewPrivileges=yes; do
  grep -q "^$key" "$unit" || fail "the unit lacks $key"
done
# The PID file is the one the daemon is told to write.
pid=$(sed -n 's/^PIDFile=//p' "$unit")
grep -q "^ExecStart=.*--pid-file $pid" "$unit" || fail "PIDFile= is not --pid-file"

# verify checks that the programs exist and the pages are there: point
# it at the DESTDIR copies (the unit's own text otherwise unchanged).
mkdir "$TESTDIR/verify"
sed "s|^ExecStart=$exec_start|ExecStart=$root$exec_start|" "$unit" \
  > "$TESTDIR/verify/mirrord.service"
mandir=$(find "$root" -type d -path '*/share/man' | head -1)
out=$(MANPATH=$mandir systemd-analyze verify "$TESTDIR/verify/mirrord.service" 2>&1) \
  || fail "systemd-analyze verify: $out"
[ -z "$out" ] || fail "systemd-analyze verify warns: $out"
# ... and it does complain about a broken unit.
sed 's/^Type=forking/Type=forked/' "$TESTDIR/verify/mirrord.service" \
  > "$TESTDIR/verify/bad.service"
out=$(MANPATH=$mandir systemd-analyze verify "$TESTDIR/verify/bad.service" 2>&1) || :
[ -n "$out" ] || fail "systemd-analyze verify accepts Type=forked"
exit 0
