"""A TLS-inspecting middlebox for the lab: a proxy that terminates TLS with certificates it
mints from its own CA and opens its own TLS to the real destination, as SSL inspection on a
corporate firewall does (``edgesim lab up --runner netns --inspect-tls``, docs/firewall.md
"SSL inspection").

:mod:`.ca` mints the certificates (its CA generated per run, never the lab PKI's),
:mod:`.records` reads the first bytes of a flow as the box does, :mod:`.aio` is the proxy.
"""
