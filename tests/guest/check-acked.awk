# SPDX-License-Identifier: MIT
# awk -f check-acked.awk ACKS BLOCKS
# ACKS: a writer guest's "E2E ACK blk=B gen=G ..." lines (for a migrated
# guest, those of both consoles: migrated_console); BLOCKS: a verifier
# guest's "E2E BLOCK blk=B gen=G|zero|bad..." lines (tests/guest/init).
# The newest acknowledged generation of each block must read back as
# that generation or a newer one (a write in flight when the writer
# stopped may have landed without its ACK line); no block may be bad.
# Prints the figures; exits 1 if a write was lost or a block is bad.
FNR == NR {
  if ($2 == "ACK" && $3 ~ /^blk=[0-9]+$/ && $4 ~ /^gen=[0-9]+$/) {
    split($3, kb, "="); split($4, kg, "=")
    if (!(kb[2] in acked) || kg[2] + 0 > acked[kb[2]])
      acked[kb[2]] = kg[2] + 0
    n++
  }
  next
}
$2 == "BLOCK" { split($3, kb, "="); got[kb[2]] = $4; seen++ }
$2 == "BLOCK" && $4 ~ /^bad/ { bad++; print "  bad: " $0 }
END {
  for (blk in acked) {
    v = got[blk]; gen = v; sub(/^gen=/, "", gen)
    if (v !~ /^gen=/ || gen + 0 < acked[blk]) {
      lost++
      if (lost <= 10)
        printf "  lost: block %s acknowledged gen %d, reads %s\n", blk, acked[blk], v
    }
  }
  printf "acknowledged writes %d (%d blocks), blocks read %d, lost %d, bad %d\n",
         n, length(acked), seen, lost, bad
  exit (lost || bad || !seen)
}
