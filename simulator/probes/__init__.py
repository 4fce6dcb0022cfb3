"""Probes: every row of the port matrix checked at protocol level, from its source zone.

``base`` (verdicts, results, error classification), one module per probe kind (``sip``,
``xmpp``, ``stun``, ``turn``, ``tcp``, ``dns``), and ``run`` (resolve rows, pick endpoints,
run probes through an executor: local, netns or compose).
"""
