#!/usr/bin/env bash
# A Python base image built from Debian's packages alone, for hosts that reach no container registry
# (air-gapped, or behind a proxy that only lets Debian's and PyPI's mirrors through).
#
#   deploy/local/build-base.sh            prints the image tag; builds it only if it does not exist yet
#
# debootstrap makes a Debian bookworm root file system (python3, a virtualenv at /opt/venv on PATH, so
# `python` and `pip` work as in python:*-slim), `docker import` turns it into an image. The tag carries a
# hash of this script and of the CA bundle, so a change to either builds a new image and an unchanged one
# is reused (about 70 s the first time, nothing afterwards). Pass the tag as the Dockerfile's PYTHON_IMAGE:
#   docker build --target serve-cpu --build-arg PYTHON_IMAGE="$(deploy/local/build-base.sh)" .
#
# Environment: DOCKER (client, default /usr/bin/docker: Debian's, with BuildKit built in), DEBIAN_MIRROR,
# CA_BUNDLE (copied into the image so pip trusts a TLS-intercepting proxy; default: the host's bundle).
set -euo pipefail

DOCKER=${DOCKER:-/usr/bin/docker}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm
CA_BUNDLE=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
PACKAGES=python3,python3-venv,ca-certificates

here=$(cd "$(dirname "$0")" && pwd)
hash=$(cat "$here/build-base.sh" "$CA_BUNDLE" 2>/dev/null | sha256sum | cut -c1-12)
TAG=${BASE_TAG:-gan-forge-local/python:$SUITE-$hash}

if "$DOCKER" image inspect "$TAG" >/dev/null 2>&1; then
    echo "$TAG"
    exit 0
fi
command -v debootstrap >/dev/null || { echo "build-base.sh: needs debootstrap (apt-get install debootstrap)" >&2; exit 1; }

root=$(mktemp -d /tmp/gan-forge-base.XXXXXX)
trap 'rm -rf "$root"' EXIT
echo "build-base.sh: debootstrap $SUITE from $MIRROR into $root" >&2
debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$root" "$MIRROR" >&2

# The host's CA bundle: pip inside image builds must trust whatever the host trusts.
if [ -f "$CA_BUNDLE" ]; then
    cp "$CA_BUNDLE" "$root/usr/local/share/ca-certificates/host-bundle.crt"
    cp "$CA_BUNDLE" "$root/etc/ssl/certs/ca-certificates.crt"
fi
# Package scripts must not try to start daemons inside an image build (Debian's usual container policy).
printf '#!/bin/sh\nexit 101\n' > "$root/usr/sbin/policy-rc.d"
chmod 0755 "$root/usr/sbin/policy-rc.d"
# Debian marks its Python externally managed (PEP 668): a virtualenv first on PATH takes the place of the
# official image's /usr/local Python, so the Dockerfile's plain `pip install` works unchanged.
chroot "$root" python3 -m venv /opt/venv >&2
chroot "$root" /opt/venv/bin/pip --version >&2
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb

tar -C "$root" -c . | "$DOCKER" import \
    --change 'ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' \
    --message "gan-forge local base: debootstrap $SUITE + $PACKAGES" \
    - "$TAG" >&2
echo "$TAG"
