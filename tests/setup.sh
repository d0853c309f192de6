#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Installs what building and testing mirrord needs (Debian 12), then
# builds it.  Used by demo.sh and run-tests.sh; safe to run again.
#
#   tests/setup.sh deps            install missing Debian packages
#   tests/setup.sh build DIR [CONFIGURE-ARGS...]
#                                  configure and build in DIR (VPATH)
set -euo pipefail

PACKAGES=(
  build-essential autoconf automake libtool pkg-config
  libnbd-dev libaio-dev zlib1g-dev libcmocka-dev libjson-c-dev
  libgnutls28-dev libinih-dev
  qemu-utils nbdkit libnbd-bin python3-libnbd fio util-linux procps strace
  clang libclang-rt-14-dev nftables iproute2 gnutls-bin
  qemu-system-x86 busybox-static cpio
  pacemaker pacemaker-cli-utils corosync crmsh resource-agents libxml2-utils
)

srcdir=$(cd "$(dirname "$0")/.." && pwd)

deps () {
  local missing=() p
  for p in "${PACKAGES[@]}"; do
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
  make -C "$dir" -j"$(nproc)" check TESTS= >>"$dir/make.out" 2>&1 \
    || { tail -40 "$dir/make.out"; exit 1; }
}

case "${1:-}" in
  deps) deps ;;
  build) shift; build "$@" ;;
  *) echo "usage: $0 deps | build DIR [CONFIGURE-ARGS...]" >&2; exit 2 ;;
esac
