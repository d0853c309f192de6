#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The include graph between the source folders (docs/architecture.md):
# no circle, and the lower folders include only what is below them.
#   common  -> nothing
#   image   -> common                  (image/block.h: the block interface)
#   bitmap  -> common, image           (bitmap/tracker.c: a block layer)
#   nbd     -> common, image           (the block interface only)
#   ha      -> common, image, bitmap   (the export and its mirror job
#                                       through struct ha_host_ops)
# A folder's edge to another is any '#include "OTHER/..."' in its .c or
# .h files.  Fails naming the offending files.
source "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
set -u

cd "$top_srcdir" || fail "no source tree"
FOLDERS=(common image bitmap nbd ha mirrord ctl)

# Edges "FROM TO" with the files that make them.
edges=$(for f in "${FOLDERS[@]}"; do
          grep -Ho '^#include "[a-z]*/' "$f"/*.c "$f"/*.h 2>/dev/null \
            | sed 's|^\([a-z]*\)/\([^:]*\):#include "\([a-z]*\)/|\1 \3 \1/\2|'
        done | awk '$1 != $2' | sort -u)
[ -n "$edges" ] || fail "no includes found: is this the source tree?"

allowed () {                    # FROM TO
  case "$1:$2" in
    common:*) return 1 ;;
    image:common) return 0 ;; image:*) return 1 ;;
    bitmap:common|bitmap:image) return 0 ;; bitmap:*) return 1 ;;
    nbd:common|nbd:image) return 0 ;; nbd:*) return 1 ;;
    ha:common|ha:image|ha:bitmap) return 0 ;; ha:*) return 1 ;;
  esac
  return 0
}

bad=0
while read -r from to file; do
  if ! allowed "$from" "$to"; then
    echo "layering: $file includes $to/ (not allowed from $from/)"
    bad=1
  fi
done <<<"$edges"

# Circles: a folder that reaches itself through the edges.
pairs=$(awk '{print $1, $2}' <<<"$edges" | sort -u)
reach () {                      # FROM: every folder reachable from FROM
  local seen=" $1 " frontier=$1 next n
  while [ -n "$frontier" ]; do
    next=
    for n in $frontier; do
      for t in $(awk -v f="$n" '$1 == f {print $2}' <<<"$pairs"); do
        [[ $seen == *" $t "* ]] && continue
        seen+="$t "
        next+=" $t"
      done
    done
    frontier=$next
  done
  echo "$seen"
}
for f in "${FOLDERS[@]}"; do
  for t in $(awk -v f="$f" '$1 == f {print $2}' <<<"$pairs"); do
    if [[ " $(reach "$t") " == *" $f "* ]]; then
      echo "layering: circle through $f/ -> $t/ -> ... -> $f/:"
      awk -v f="$f" -v t="$t" '$1 == f && $2 == t {print "  " $3}' <<<"$edges"
      bad=1
    fi
  done
done

# The NBD server knows exports only through its backend (nbd/backend.h).
if grep -n 'export_\|struct export\b\|ha_' nbd/*.c nbd/*.h | grep -v 'server_export\|meta_export\|send_info_export\|opt_export_name\|put_export'; then
  echo "layering: nbd/ names the daemon's exports or ha/"
  bad=1
fi
[ "$bad" = 0 ] || fail "include layering broken"
echo "layering: $(wc -l <<<"$pairs") folder edges, no circle"
exit 0
