#!/usr/bin/env bash
# Install edgesim on Debian 12.
#
#   bash scripts/setup.sh          the project (pip install .): enough for `edgesim run`
#   bash scripts/setup.sh --test   also the test dependencies and the real peers the tests drive
#                                  (SIPp, stunnel, sipsak, Kamailio, SIPE with BitlBee, Prosody,
#                                  ejabberd, coturn's clients, libnice, nftables, iptables,
#                                  tshark, Chromium, the Docker engine); needs root
set -euo pipefail
cd "$(dirname "$0")/.."

PEERS=(
  sip-tester stunnel4 sipsak   # SIP peers (SIPp has no TLS: stunnel puts TLS under it)
  kamailio kamailio-tls-modules  # a real SIP proxy: the same-run reference in bench/sip_bench.py
  pidgin-sipe bitlbee-libpurple  # SIPE, a real Lync-dialect client, scriptable through BitlBee
  gcc libc6-dev                # builds the libxml2 shim SIPE needs on Debian 12 (docs/sip.md)
  prosody lua-unbound          # a real XMPP server for jabber.lab
  ejabberd                     # a second real XMPP server for jabber.lab
  coturn                       # turnutils_* clients, and turnserver for comparisons
  gir1.2-nice-0.1 python3-gi   # libnice: a real MS-TURN (OC2007R2) client
  nftables iptables iproute2 openssl  # lab firewalls (nft, iptables-nft), namespaces, certificates
  tshark tcpdump               # captures (pcapng with TLS secrets) and their checks
  chromium                     # renders the HTML reports in tests
  debootstrap                  # builds a local base image where no registry is reachable
)

say() { printf '==> %s\n' "$*"; }

if [ "${1:-}" = "--test" ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup.sh --test installs Debian packages and the Docker engine: run it as root" >&2
    exit 2
  fi
  export DEBIAN_FRONTEND=noninteractive
  say "apt: ${PEERS[*]}"
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${PEERS[@]}" >/dev/null
  if [ -f scripts/setup-docker.sh ]; then
    say "Docker engine and Compose v2"
    bash scripts/setup-docker.sh
    say "local base image for the compose lab (no registry needed)"
    bash scripts/make-base-image.sh
  fi
  say "python: edgesim with its test extras"
  python3 -m pip install -q --disable-pip-version-check -e '.[test]'
else
  say "python: edgesim"
  python3 -m pip install -q --disable-pip-version-check .
fi
say "done"
