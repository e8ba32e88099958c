#!/usr/bin/env bash
# Builds one image per binary — rust-ms/gateway:local, rust-ms/user:local,
# rust-ms/order:local — from what this machine has, with no pull: the stripped release
# binary, exactly the shared libraries it links (and the loader), its config file at
# /etc/rust-ms/NAME.toml, and a passwd entry for the user it runs as (65532, not root),
# imported as a one-layer image FROM nothing. Every setting stays overridable by MS_
# variables; the image only sets what a container needs (listen on every interface, the
# admin port on 9900). The etcd image is built by scripts/build-etcd-image.sh.
#   scripts/build-images.sh [NAME...]   (default: gateway user order)
set -euo pipefail
cd "$(dirname "$0")/.."

names=("$@")
[ ${#names[@]} -gt 0 ] || names=(gateway user order)
if ! docker info >/dev/null 2>&1; then
  echo "build-images: no Docker engine answers" >&2
  exit 1
fi
cargo build --release -p rust-ms-gateway -p rust-ms-services --bins

declare -A rpc_port=([gateway]=8180 [user]=8190 [order]=8200)
for name in "${names[@]}"; do
  bin=target/release/$name
  [ -x "$bin" ] || { echo "build-images: no binary $bin" >&2; exit 1; }
  root=$(mktemp -d)
  trap 'rm -rf "$root"' EXIT
  mkdir -p "$root/usr/local/bin" "$root/etc/rust-ms" "$root/tmp"
  chmod 1777 "$root/tmp"
  cp "$bin" "$root/usr/local/bin/$name"
  strip "$root/usr/local/bin/$name"
  cp "config/$name.toml" "$root/etc/rust-ms/$name.toml"
  # The libraries the binary links (glibc, libgcc_s, the loader), at the paths it expects.
  for lib in $(ldd "$bin" | grep -o '/[^ )]*' || true); do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
  done
  echo "rust-ms:x:65532:65532:rust-ms:/nonexistent:/nonexistent" >"$root/etc/passwd"
  echo "rust-ms:x:65532:" >"$root/etc/group"
  ports="${rpc_port[$name]} 9900"
  [ "$name" = gateway ] && ports="8080 $ports"
  tar --owner=0 --group=0 -C "$root" -c . | docker import \
    --change 'USER 65532:65532' \
    --change "ENV MS_LISTEN_HOST=0.0.0.0 MS_ADMIN__LISTEN=0.0.0.0:9900" \
    --change "EXPOSE $ports" \
    --change "ENTRYPOINT [\"/usr/local/bin/$name\"]" \
    --change "CMD [\"--config\", \"/etc/rust-ms/$name.toml\"]" \
    --message "rust-ms $name $(git rev-parse --short HEAD 2>/dev/null || echo unknown)" \
    - "rust-ms/$name:local" >/dev/null
  rm -rf "$root"
  trap - EXIT
  size=$(docker image inspect --format '{{.Size}}' "rust-ms/$name:local")
  echo "built rust-ms/$name:local ($((size / 1024 / 1024)) MiB)"
done
