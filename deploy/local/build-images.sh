#!/usr/bin/env bash
# Build the CPU stack's images without a registry: the local base (build-base.sh), the Dockerfile's
# serve-cpu target on it, and Prometheus from Debian's package on it (prometheus.Dockerfile).
#
#   deploy/local/build-images.sh        then: docker compose -f docker-compose.yml -f docker-compose.cpu.yml \
#                                                 -f deploy/local/docker-compose.local.yml up -d --no-build
#
# Prints the three tags as NAME=TAG lines (what docker-compose.local.yml reads: GAN_LOCAL_BASE_IMAGE,
# GAN_LOCAL_SERVE_IMAGE, GAN_LOCAL_PROMETHEUS_IMAGE); set those variables beforehand to choose the tags.
# Docker's layer cache makes a rebuild with unchanged sources take seconds.
set -euo pipefail

DOCKER=${DOCKER:-/usr/bin/docker}
export DOCKER DOCKER_BUILDKIT=1   # BuildKit builds only the target's stages (the legacy builder builds all)
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)

base=${GAN_LOCAL_BASE_IMAGE:-$("$here/build-base.sh")}
serve=${GAN_LOCAL_SERVE_IMAGE:-gan-forge-serve-cpu:local}
prometheus=${GAN_LOCAL_PROMETHEUS_IMAGE:-gan-forge-prometheus:local}

"$DOCKER" build --quiet --target serve-cpu --build-arg PYTHON_IMAGE="$base" --tag "$serve" "$repo" >&2
"$DOCKER" build --quiet --file "$here/prometheus.Dockerfile" --build-arg BASE_IMAGE="$base" \
    --tag "$prometheus" "$here" >&2
echo "GAN_LOCAL_BASE_IMAGE=$base"
echo "GAN_LOCAL_SERVE_IMAGE=$serve"
echo "GAN_LOCAL_PROMETHEUS_IMAGE=$prometheus"
