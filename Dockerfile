# The edgesim lab image: every host and firewall container of docker-compose.yml runs it.
#
# The project and its dependencies are installed from wheels built on the host
# (scripts/build-image.sh runs `pip wheel`), so the build itself needs no network:
#
#   scripts/build-image.sh                                   # python:3.11-slim from a registry
#   scripts/build-image.sh --base edgesim-base:bookworm      # base made by make-base-image.sh
#
# The base image needs Python 3.11 (python3 -m venv), iproute2 and nftables; on the official
# python:3.11-slim the last two are installed with apt (that one step needs a Debian mirror).
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

RUN if ! command -v ip >/dev/null || ! command -v nft >/dev/null; then \
        apt-get update && \
        apt-get install -y --no-install-recommends iproute2 nftables && \
        rm -rf /var/lib/apt/lists/*; \
    fi

COPY build/wheels /tmp/wheels
RUN python3 -m venv /opt/edgesim && \
    /opt/edgesim/bin/pip install --no-index --find-links /tmp/wheels --no-cache-dir edgesim && \
    rm -rf /tmp/wheels
ENV PATH=/opt/edgesim/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONUNBUFFERED=1

# One lab PKI for every container of this image (the CAs the hosts trust each other by).
RUN edgesim certs --out /var/lib/edgesim/certs >/dev/null

WORKDIR /var/lib/edgesim
CMD ["edgesim", "--help"]
