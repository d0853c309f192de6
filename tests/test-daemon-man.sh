#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The man pages (man/*.pod): each formats without a warning from man,
# each documents what its program's --help lists (every mirrord option,
# [mirrord] key and export key; every mirrorctl command and option;
# every mirrord-migrate option; every OCF agent parameter and action),
# `mirrord -h` is --help, the keys --help lists are the ones the parser
# takes, and make install puts the pages where man finds them.
source "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires man --version

pod=$top_srcdir/man
pages=(mirrord.8 mirrorctl.8 mirrord.conf.5 ocf_mirrord_mirrord.7 mirrord-migrate.8)
for p in "${pages[@]}"; do
  f=$top_builddir/man/$p
  [ -f "$f" ] || fail "$f not built"
  warn=$(LC_ALL=C.UTF-8 MANWIDTH=80 man --warnings -l "$f" 2>&1 >/dev/null)
  [ -z "$warn" ] || fail "man --warnings -l $p: $warn"
  LC_ALL=C.UTF-8 man -l "$f" 2>/dev/null | grep -q "^NAME" || fail "$p does not render"
done

# item POD WORD: WORD is in an =item line of POD (documented, not just mentioned).
item () {
  grep '^=item' "$pod/$1" | grep -qF -- "$2" || fail "'$2' is not documented in $1"
}

# mirrord: -h is --help; every option and key of --help has its item.
help=$("$MIRRORD" --help) || fail "mirrord --help failed"
[ "$("$MIRRORD" -h)" = "$help" ] || fail "mirrord -h is not --help"
opts=$(sed -nE 's/^  -([a-zA-Z]), --([a-z-]+).*/\1:\2/p; s/^      --([a-z-]+).*/:\1/p' <<<"$help")
[ "$(wc -l <<<"$opts")" -ge 12 ] || fail "too few options in --help: $opts"
while IFS=: read -r short long; do
  item mirrord.pod "B<--$long>"
  [ -z "$short" ] || item mirrord.pod "B<-$short>"
done <<<"$opts"
section () { awk -v h="$1" 'index($0, h) == 1 { on = 1; next } /^$/ { on = 0 } on' <<<"$help"; }
gkeys=$(section "Keys of the file's [mirrord]" | sed -nE 's/^  ([a-z-]+) = .*/\1/p')
gkeys+=" $(section "Keys of the file's [mirrord]" | sed -n '1p')"
ekeys=$(section "Export keys" | sed -nE 's/^  ([a-z-]+) = .*/\1/p')
[ "$(wc -w <<<"$gkeys")" -ge 12 ] || fail "too few [mirrord] keys: $gkeys"
[ "$(wc -w <<<"$ekeys")" -ge 15 ] || fail "too few export keys: $ekeys"
for k in $gkeys $ekeys; do item mirrord.conf.pod "B<$k>"; done
# The keys --help lists are the parser's: none is unknown to it.
for k in $ekeys; do
  out=$("$MIRRORD" --export "vm=$TESTDIR/none.img,$k=%bad" 2>&1) && fail "$k=%bad accepted"
  [[ $out != *"unknown export key"* ]] || fail "--help lists $k, the parser does not know it: $out"
done
out=$("$MIRRORD" --export "vm=$TESTDIR/none.img,colour=red" 2>&1) && fail "colour accepted"
[[ $out == *"unknown export key 'colour'"* ]] || fail "unknown key not named: $out"

# mirrorctl: every command and option of every --help.
chelp=$("$MIRRORCTL" --help) || fail "mirrorctl --help failed"
[ "$("$MIRRORCTL" -h)" = "$chelp" ] || fail "mirrorctl -h is not --help"
cmds=$(awk '/^Commands:/ { on = 1; next } /^[A-Z]/ { on = 0 } on' <<<"$chelp" \
         | sed -E 's/^  //; s/ [A-Z[].*//')
[ "$(wc -l <<<"$cmds")" -ge 11 ] || fail "too few commands: $cmds"
copts=$(sed -nE 's/^  (-[a-zA-Z], )?(--[a-z-]+).*/\2/p' <<<"$chelp")
while read -r cmd; do
  item mirrorctl.pod "B<$cmd>"
  # shellcheck disable=SC2086
  sub=$("$MIRRORCTL" $cmd --help) || fail "mirrorctl $cmd --help failed"
  [[ $sub == "Usage: mirrorctl"*"$cmd"* ]] || fail "mirrorctl $cmd --help: $sub"
  copts+=$'\n'$(sed -nE 's/^  (-[a-zA-Z], )?(--[a-z-]+).*/\2/p' <<<"$sub")
done <<<"$cmds"
for o in $(sort -u <<<"$copts"); do
  grep -qF -- "B<$o>" "$pod/mirrorctl.pod" || fail "mirrorctl $o is not in mirrorctl(8)"
done
"$MIRRORCTL" mirror --help | grep "mirror cutover" >/dev/null || fail "mirrorctl mirror --help"

# mirrord-migrate: every option of its --help.
mhelp=$("$top_srcdir/ctl/mirrord-migrate" --help) || fail "mirrord-migrate --help failed"
mopts=$(grep -oE -- '--[a-z][a-z-]+' <<<"$mhelp" | sort -u)
[ "$(wc -l <<<"$mopts")" -ge 18 ] || fail "too few mirrord-migrate options: $mopts"
for o in $mopts; do item mirrord-migrate.pod "B<$o>"; done

# The OCF agent: every parameter and action of its meta-data.
meta=$(OCF_ROOT=/nonexistent "$top_builddir/ocf/mirrord" meta-data) || fail "meta-data"
for p in $(grep -o '<parameter name="[a-z_]*"' <<<"$meta" | cut -d'"' -f2); do
  item ocf_mirrord_mirrord.pod "B<$p>"
done
for a in $(grep -o '<action name="[a-z-]*"' <<<"$meta" | cut -d'"' -f2 | sort -u); do
  item ocf_mirrord_mirrord.pod "B<$a>"
done

# make install puts them where man looks.
make -s -C "$top_builddir" install DESTDIR="$TESTDIR/root" >"$TESTDIR/install.log" 2>&1 \
  || { cat "$TESTDIR/install.log"; fail "make install failed"; }
mandir=$(find "$TESTDIR/root" -type d -name man -path '*/share/man' | head -1)
[ -n "$mandir" ] || fail "no man pages installed"
for p in mirrord mirrorctl mirrord.conf ocf_mirrord_mirrord mirrord-migrate; do
  MANPATH=$mandir man -w "$p" >/dev/null 2>&1 || fail "man $p: not found after make install"
done
MANPATH=$mandir LC_ALL=C.UTF-8 man mirrord 2>/dev/null | grep -q -- "--nbd-listen" \
  || fail "man mirrord shows no options"
exit 0
