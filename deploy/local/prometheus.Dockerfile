# Prometheus from Debian's package, standing in for prom/prometheus where no registry is reachable
# (deploy/local/README.md). Built on the local base image (deploy/local/build-base.sh), so it needs only
# Debian's mirror. It behaves like the official image as docker-compose.yml uses it: the same entrypoint
# with the compose file's flags, /prometheus as the data folder, running as nobody.
ARG BASE_IMAGE=gan-forge-local/python:bookworm
FROM ${BASE_IMAGE}
ARG DEBIAN_FRONTEND=noninteractive
# Debian's package is pinned by the base image's suite (bookworm: Prometheus 2.42); pinning its exact
# version would break the build at each security update.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends prometheus \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /prometheus /etc/prometheus \
    && chown 65534:65534 /prometheus
USER 65534:65534
WORKDIR /prometheus
EXPOSE 9090
ENTRYPOINT ["/usr/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]
