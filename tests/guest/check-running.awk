# SPDX-License-Identifier: MIT
# awk [-v boundary=N] -f check-running.awk CONSOLE
# CONSOLE: one writer guest's serial output, CR removed; for a guest
# live-migrated while it wrote, the source QEMU's console followed by the
# destination's (cat them: a line can be cut between the two files).
# Checks that it is one run of one boot, never restarted:
#   - exactly one "E2E READY" line (a second one is a second boot);
#   - the write counter (seq= on ACK and IOERR lines, tests/guest/init)
#     starts at 1 and goes up by exactly one per line: no gap, no reset;
#   - the guest's uptime (up=) never goes back.
# boundary: how many counter lines the first console held (the source's);
# then the counter must go on past it (the guest ran on the destination).
# Prints the figures; exits 1 if any check fails.
function bad(msg) { errors++; if (errors <= 10) print "  " msg }
$1 == "E2E" && $2 == "READY" { boots++; boot = $4; next }
$1 == "E2E" && ($2 == "ACK" || $2 == "IOERR") {
  s = ""; u = ""
  for (i = 3; i <= NF; i++) {
    if ($i ~ /^seq=[0-9]+$/) s = substr($i, 5) + 0
    else if ($i ~ /^up=[0-9.]+$/) u = substr($i, 4) + 0
  }
  if (s == "") { bad("no counter: " $0); next }
  if (s != last + 1) bad(sprintf("counter went from %d to %d", last, s))
  if (u != "" && u < lastup) bad(sprintf("uptime went back from %s to %s", lastup, u))
  last = s; lastup = u; n++
  if ($2 == "IOERR") ioerr++
}
END {
  if (boots != 1) bad(sprintf("%d boots (READY lines), expected 1", boots + 0))
  if (!n) bad("no write counted")
  if (boundary != "" && last <= boundary + 0)
    bad(sprintf("counter stopped at %d: nothing after the first %d", last, boundary))
  printf "boots %d (%s), writes counted %d (seq 1..%d), io errors %d, uptime %s s",
         boots, boot, n, last, ioerr, lastup
  if (boundary != "")
    printf ", after the switch %d", last - boundary
  printf "\n"
  exit (errors > 0)
}
