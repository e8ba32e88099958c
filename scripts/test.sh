#!/usr/bin/env bash
# Runs every test of rust-ms: unit tests, the registry conformance suite on both backends,
# the integration tests against etcd in containers and the real binaries, and, with a
# Docker engine, the compose cluster under faults (its images are built here first).
#
# etcd comes from MS_TEST_ETCD_ENDPOINTS (an etcd already running), else from the image in
# MS_ETCD_IMAGE, else from rust-ms/etcd:local, built here from Debian's etcd-server.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
# etcd-client's build script runs $PROTOC when it is set: a PROTOC that names no program
# (a machine set up without protoc) must not hide the one just installed.
if [ -n "${PROTOC:-}" ] && [ ! -x "${PROTOC}" ]; then
  echo "test.sh: PROTOC=${PROTOC} is not a program; using $(command -v protoc)" >&2
  export PROTOC="$(command -v protoc)"
fi
if [ -z "${MS_TEST_ETCD_ENDPOINTS:-}" ] && [ -z "${MS_ETCD_IMAGE:-}" ]; then
  if docker info >/dev/null 2>&1; then
    docker image inspect rust-ms/etcd:local >/dev/null 2>&1 || scripts/build-etcd-image.sh rust-ms/etcd:local
    export MS_ETCD_IMAGE=rust-ms/etcd:local
  fi
fi
# The compose cluster's fault test runs the images of this tree's binaries.
if docker info >/dev/null 2>&1; then
  docker image inspect rust-ms/etcd:local >/dev/null 2>&1 || scripts/build-etcd-image.sh rust-ms/etcd:local
  scripts/build-images.sh
fi
# The integration tests start the real binaries: build them first.
cargo build --workspace --bins
cargo test --workspace -- --show-output
