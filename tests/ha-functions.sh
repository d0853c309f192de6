# SPDX-License-Identifier: MIT
# Helpers for the HA pair tests: two daemons, a and b, each with export
# vm1 whose peer is the other, on unix sockets.
#   start_pair_member NAME ROLE [extra export keys]
#   hfield NAME PYEXPR   a field of vm1's status (e = the export)
start_pair_member () {
  local name=$1 role=$2 extra=${3:-} other
  [ "$name" = a ] && other=b || other=a
  start_mirrord "$name" \
    --export "vm1=$TESTDIR/$name.img,role=$role,peer=$(uri "$other" vm1),peer-timeout=1$extra"
}
hfield () {
  ctl "$1" --json status vm1 | $PY -c "import json,sys; e=json.load(sys.stdin)['exports'][0]; print($2)"
}
# In sync: connected, both uptodate at the same generation.
pair_in_sync () {
  [ "$(hfield "$1" 'e["peer"]["connected"] and e["disk"] == "uptodate" and e["peer"]["disk"] == "uptodate" and e["peer"]["generation"]["current"] == e["generation"]["current"]')" = True ]
}
