#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Installs what building and testing mirrord needs (Debian 12), then
# builds it.  Used by demo.sh and run-tests.sh; safe to run again.
#
#   tests/setup.sh deps [demo]     install missing Debian packages: all
#                                  the test suite needs, or only the
#                                  demo's (demo.sh)
#   tests/setup.sh build DIR [CONFIGURE-ARGS...]
#                                  configure and build in DIR (VPATH)
set -euo pipefail

# Building (perl: pod2man for the man pages; cmocka: configure wants it).
BUILD_PACKAGES=(
  build-essential autoconf automake libtool pkg-config perl
  libnbd-dev libaio-dev zlib1g-dev libcmocka-dev libjson-c-dev
  libgnutls28-dev libinih-dev
)
# What demo.sh runs besides: the guest (qemu, its initramfs tools),
# psktool, qemu-nbd and nbdinfo for the migration, python3 for JSON.
DEMO_PACKAGES=(
  qemu-system-x86 busybox-static cpio gnutls-bin qemu-utils libnbd-bin
  python3 procps util-linux
)
# The rest of the test suite: the clients it drives, the fuzzers, the
# network namespaces, the man-page check, the Pacemaker tests.
TEST_PACKAGES=(
  nbdkit python3-libnbd fio strace
  clang libclang-rt-14-dev nftables iproute2 man-db
  pacemaker pacemaker-cli-utils corosync crmsh resource-agents libxml2-utils
)

srcdir=$(cd "$(dirname "$0")/.." && pwd)

deps () {
  local missing=() p packages=("${BUILD_PACKAGES[@]}" "${DEMO_PACKAGES[@]}")
  [ "${1:-}" = demo ] || packages+=("${TEST_PACKAGES[@]}")
  for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' \
      || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "==> installing: ${missing[*]}"
  local sudo=
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
}

build () {
  local dir=$1; shift
  if [ ! -x "$srcdir/configure" ] || [ "$srcdir/configure.ac" -nt "$srcdir/configure" ] \
     || [ "$srcdir/Makefile.am" -nt "$srcdir/Makefile.in" ]; then
    echo "==> autoreconf"
    (cd "$srcdir" && autoreconf -fi >/dev/null 2>&1)
  fi
  mkdir -p "$dir"
  # A stale in-tree configure would hijack VPATH builds.
  if [ -f "$srcdir/config.status" ] && [ "$dir" != "$srcdir" ]; then
    (cd "$srcdir" && make distclean >/dev/null 2>&1 || :)
  fi
  if [ ! -f "$dir/config.status" ] || [ "$dir/config.status" -ot "$srcdir/configure" ] \
     || [ "$(cat "$dir/.configure-args" 2>/dev/null)" != "$*" ]; then
    echo "==> configure $* (in $dir)"
    (cd "$dir" && "$srcdir/configure" "$@" >configure.out 2>&1) \
      || { tail -30 "$dir/configure.out"; exit 1; }
    echo "$*" > "$dir/.configure-args"
  fi
  echo "==> make (in $dir)"
  make -C "$dir" -j"$(nproc)" >"$dir/make.out" 2>&1 || { tail -40 "$dir/make.out"; exit 1; }
  # The test programs too, without make check (which would rewrite
  # the test suite's logs).
  make -C "$dir" -j"$(nproc)" check-programs >>"$dir/make.out" 2>&1 \
    || { tail -40 "$dir/make.out"; exit 1; }
}

case "${1:-}" in
  deps) shift; deps "$@" ;;
  build) shift; build "$@" ;;
  *) echo "usage: $0 deps [demo] | build DIR [CONFIGURE-ARGS...]" >&2; exit 2 ;;
esac
