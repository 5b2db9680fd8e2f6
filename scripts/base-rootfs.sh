#!/usr/bin/env bash
# Makes a small root filesystem tarball from Debian's busybox-static: the base image of the demo,
# the tests and the benchmarks. Usage: base-rootfs.sh OUT.tar
set -euo pipefail
out=$1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
r=$work/rootfs
mkdir -p "$r"/{bin,etc,tmp,root,home/dev,usr/bin,var}
cp /bin/busybox "$r/bin/busybox"
for applet in $("$r/bin/busybox" --list); do
  [ "$applet" = busybox ] || ln -s busybox "$r/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\ndev:x:1001:1001:dev:/home/dev:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$r/etc/passwd"
printf 'root:x:0:\ndev:x:1001:\nnogroup:x:65534:\n' >"$r/etc/group"
chmod 1777 "$r/tmp"
chown 1001:1001 "$r/home/dev"
tar --numeric-owner -C "$r" -cf "$out" .
