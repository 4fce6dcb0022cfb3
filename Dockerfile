# The edgesim lab image: every host and firewall container of docker-compose.yml runs it.
#
# Built from the source alone, by the compose file's `build:` section:
#
#   docker compose up --build -d --wait                       # base python:3.11-slim (a registry)
#   EDGESIM_BASE=edgesim-base:bookworm docker compose up --build -d --wait    # no registry
#
# edgesim and its dependencies come from PyPI inside the build (dependencies first, in a layer of
# their own that stays cached while pyproject.toml's list is unchanged). The base image needs
# Python 3.11 (venv); iproute2, nftables and tcpdump are installed with apt where it lacks them
# (on python:3.11-slim: that one step needs a Debian mirror). edgesim-base:bookworm, made by
# scripts/make-base-image.sh, has all of them and trusts the CA certificates this machine
# trusts locally, so a TLS-inspecting proxy in front of PyPI works inside the build too.
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

RUN missing=""; \
    for tool in ip:iproute2 nft:nftables tcpdump:tcpdump; do \
        command -v "${tool%%:*}" >/dev/null || missing="$missing ${tool#*:}"; \
    done; \
    if [ -n "$missing" ]; then \
        apt-get update && \
        apt-get install -y --no-install-recommends $missing && \
        rm -rf /var/lib/apt/lists/*; \
    fi

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_ROOT_USER_ACTION=ignore \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt PYTHONUNBUFFERED=1
COPY pyproject.toml /src/pyproject.toml
RUN python3 -m venv /opt/edgesim && \
    python3 -c "import tomllib; print('\n'.join(tomllib.load(open('/src/pyproject.toml', 'rb'))['project']['dependencies']))" >/src/requirements.txt && \
    /opt/edgesim/bin/pip install -r /src/requirements.txt 'setuptools>=68' wheel

COPY README.md /src/README.md
COPY scenarios /src/scenarios
COPY simulator /src/simulator
RUN /opt/edgesim/bin/pip install --no-deps --no-build-isolation /src && rm -rf /src
ENV PATH=/opt/edgesim/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

# One lab PKI for every container of this image (the CAs the hosts trust each other by).
RUN edgesim certs --out /var/lib/edgesim/certs >/dev/null

WORKDIR /var/lib/edgesim
CMD ["edgesim", "--help"]
