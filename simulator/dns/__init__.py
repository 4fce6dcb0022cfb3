"""The lab DNS: A and SRV records of every lab domain, served from the topology.

``zone.py`` is the sans-IO core (wire query in, wire answer out, over dnspython's codec);
``aio.py`` serves it on UDP and TCP; ``resolver.py`` is the client the services use, so that
partner discovery really goes through DNS (and a firewall that blocks DNS breaks it).
"""
