#!/usr/bin/env bash
# Installs the Debian packages the build and the tests need, when missing:
#   protobuf-compiler  etcd-client's build script compiles etcd's .proto files with protoc
#   etcd-server        the etcd binary the local test image is made of
#   etcd-client        etcdctl, for looking at the registry by hand
#   prometheus         promtool, Prometheus's own parser, which reads /metrics in the tests
#   chromium           the headless browser the dashboard test drives
#   docker-compose     runs deploy/compose.yml, the cluster the fault test breaks
# and from PyPI, when python3 lacks them:
#   grpcio, grpcio-reflection, grpcio-health-checking, googleapis-common-protos
#                      nodes of another language in the tests (tests/python/), with
#                      Python's stock reflection and the google.api.http annotations
#   openapi-spec-validator
#                      checks the gateway's OpenAPI document in the tests
set -euo pipefail

# Python's gRPC for the foreign-node test: pinned, so every machine runs the same node.
if ! python3 -c "import grpc, grpc_reflection, grpc_health, google.api.annotations_pb2" >/dev/null 2>&1; then
  echo "install-deps: installing Python's grpcio and its reflection, health and googleapis protos from PyPI"
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
    grpcio==1.85.3 grpcio-reflection==1.85.1 grpcio-health-checking==1.85.1 \
    googleapis-common-protos==1.76.0
fi

# An independent check of the gateway's OpenAPI 3.1 document (tests/tests/openapi.rs).
if ! python3 -c "import openapi_spec_validator" >/dev/null 2>&1; then
  echo "install-deps: installing openapi-spec-validator from PyPI"
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
    openapi-spec-validator==0.9.0
fi

need=()
command -v protoc >/dev/null 2>&1 || need+=(protobuf-compiler)
command -v etcd >/dev/null 2>&1 || need+=(etcd-server)
command -v etcdctl >/dev/null 2>&1 || need+=(etcd-client)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v docker-compose >/dev/null 2>&1 || need+=(docker-compose)
[ ${#need[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ]; then
  sudo=()
elif command -v sudo >/dev/null 2>&1; then
  sudo=(sudo)
else
  echo "install-deps: need ${need[*]} (apt-get install ${need[*]}) and am neither root nor able to sudo" >&2
  exit 1
fi
echo "install-deps: installing ${need[*]}"
"${sudo[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${need[@]}" >/dev/null
