#!/usr/bin/env bash
# Builds the etcd image the tests run, from Debian's etcd-server package.
#
# No image can be pulled on our machines, so the image is made here: the etcd binary, the
# few libraries it links and an empty data directory, imported as a one-layer image. The
# binary sits where the official image keeps it (/usr/local/bin/etcd), so the tests start
# either image the same way. Usage: scripts/build-etcd-image.sh [IMAGE] (default rust-ms/etcd:local)
set -euo pipefail

image=${1:-rust-ms/etcd:local}
etcd_bin=$(command -v etcd || true)
if [ -z "$etcd_bin" ]; then
  echo "build-etcd-image: no etcd binary; install Debian's etcd-server package first" >&2
  exit 1
fi

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/usr/local/bin" "$root/var/lib/etcd" "$root/tmp"
cp "$etcd_bin" "$root/usr/local/bin/etcd"
if etcdctl_bin=$(command -v etcdctl); then
  cp "$etcdctl_bin" "$root/usr/local/bin/etcdctl"
fi
# The shared libraries the binaries link (with the loader), at the paths they expect.
for bin in "$root"/usr/local/bin/*; do
  for lib in $(ldd "$bin" 2>/dev/null | grep -o '/[^ )]*' || true); do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
  done
done

tar -C "$root" -c . | docker import \
  --change 'ENV PATH=/usr/local/bin' \
  --change 'EXPOSE 2379 2380' \
  --change 'CMD ["/usr/local/bin/etcd"]' \
  --message "etcd $("$etcd_bin" --version | head -n1) from Debian's etcd-server" \
  - "$image" >/dev/null
echo "built $image ($("$etcd_bin" --version | head -n1))"
