#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Builds the end-to-end test guest from Debian packages only:
#   OUTDIR/vmlinuz     the kernel of Debian's cloud kernel package
#   OUTDIR/initrd.img  busybox-static, the virtio modules, tests/guest/init
# The packages are fetched with apt-get download and unpacked with
# dpkg-deb -x (nothing is installed).  The result is cached in OUTDIR
# and rebuilt only when this script or the init changes; concurrent
# callers wait for one another (flock).
#
#   tests/guest/build-guest.sh OUTDIR
# Exit 0 with both files in place, 1 (with a message) if the packages
# cannot be had: callers skip then.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:?usage: build-guest.sh OUTDIR}
mkdir -p "$out"
out=$(cd "$out" && pwd)

exec 9>"$out/.lock"
flock 9

if [ -s "$out/vmlinuz" ] && [ -s "$out/initrd.img" ] \
   && [ "$out/initrd.img" -nt "$here/init" ] && [ "$out/initrd.img" -nt "$0" ]; then
  exit 0
fi

die () { echo "build-guest: $*" >&2; exit 1; }
for tool in apt-get dpkg-deb cpio gzip; do
  command -v $tool >/dev/null || die "needs $tool"
done

# apt-get download PKG into $out/debs, refreshing the package lists
# once if the first try fails (a fresh machine has none).
debs=$out/debs
mkdir -p "$debs"
fetch () {
  local pkg=$1
  ls "$debs/${pkg}_"*.deb >/dev/null 2>&1 && return 0
  # As root, apt warns that its sandbox user cannot write here: harmless.
  (cd "$debs" && apt-get download -q "$pkg" >/dev/null 2>&1) && return 0
  [ "$(id -u)" = 0 ] && apt-get update -qq >/dev/null 2>&1 || :
  (cd "$debs" && apt-get download -q "$pkg" >/dev/null 2>&1) \
    || die "apt-get download $pkg failed"
}

# The meta package names the current cloud kernel.
kpkg=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null \
         | awk '/Depends: linux-image-[0-9]/ { print $2; exit }') || :
if [ -z "$kpkg" ] && [ "$(id -u)" = 0 ]; then
  apt-get update -qq >/dev/null 2>&1 || :
  kpkg=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null \
           | awk '/Depends: linux-image-[0-9]/ { print $2; exit }') || :
fi
[ -n "$kpkg" ] || die "no linux-image-cloud-amd64 in the package lists"
fetch "$kpkg"
fetch busybox-static

rm -rf "$out/x" "$out/root"
mkdir -p "$out/x/kernel" "$out/x/busybox"
dpkg-deb -x "$(ls "$debs/${kpkg}_"*.deb | head -1)" "$out/x/kernel"
dpkg-deb -x "$(ls "$debs/busybox-static_"*.deb | head -1)" "$out/x/busybox"
kver=${kpkg#linux-image-}
moddir=$out/x/kernel/lib/modules/$kver/kernel
[ -d "$moddir" ] || die "no modules in $kpkg"

# The cloud kernel builds virtio, virtio_pci and virtio_blk as modules
# (CONFIG_VIRTIO_BLK=m ...); each .ko names what it needs in its
# .modinfo section ("depends=a,b"), there being no modules.dep in the
# package.  List them depth first: dependencies before their users.
order=()
declare -A seen
add_module () {
  local name=$1 file dep
  [ -n "${seen[$name]:-}" ] && return 0
  seen[$name]=1
  file=$(find "$moddir" -name "$name.ko" -print -quit)
  [ -n "$file" ] || die "module $name not in $kpkg"
  for dep in $(tr '\0' '\n' < "$file" | sed -n 's/^depends=//p' | tr ',' ' '); do
    add_module "$dep"
  done
  order+=("$name")
}
add_module virtio_pci
add_module virtio_blk

root=$out/root
mkdir -p "$root"/{bin,dev,proc,sys,tmp,lib/modules}
cp "$out/x/busybox/bin/busybox" "$root/bin/busybox"
for applet in $("$root/bin/busybox" --list); do
  [ "$applet" = busybox ] || ln -s busybox "$root/bin/$applet"
done
for m in "${order[@]}"; do
  cp "$(find "$moddir" -name "$m.ko" -print -quit)" "$root/lib/modules/"
  echo "$m"
done > "$root/lib/modules/order"
install -m 755 "$here/init" "$root/init"
(cd "$root" && find . | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) | gzip -9 > "$out/initrd.tmp"
cp "$out/x/kernel/boot/vmlinuz-$kver" "$out/vmlinuz.tmp"
mv "$out/vmlinuz.tmp" "$out/vmlinuz"
echo "$kver" > "$out/kernel-version"
mv "$out/initrd.tmp" "$out/initrd.img"
rm -rf "$out/x" "$out/root"
echo "build-guest: $out/vmlinuz ($kver) and $out/initrd.img ($(du -h "$out/initrd.img" | cut -f1); modules: ${order[*]})"
