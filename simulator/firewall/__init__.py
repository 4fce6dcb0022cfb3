"""The lab's firewalls in one place: rendering rules from the matrix, loading a user's rules as
written, tracing what the kernel decided for each packet, auditing and diffing rule files.

* :mod:`~simulator.firewall.render`: nftables rules that let exactly the matrix's open rows through;
* :mod:`~simulator.firewall.source`: where each rule of a rule file is (file, line, text, comment);
* :mod:`~simulator.firewall.rules`: loading a file into a firewall (nftables or ``iptables-save``),
  checked first, and the index from kernel rule handles to those places;
* :mod:`~simulator.firewall.trace`: a trace session in one firewall (``meta nftrace set 1`` for
  the flows of interest only, read back with ``nft monitor``) and the decisions it yields;
* :mod:`~simulator.firewall.sandbox`: the firewalls of a topology and stand-in hosts in network
  namespaces of their own, without a lab;
* :mod:`~simulator.firewall.audit` and :mod:`~simulator.firewall.diff`: every matrix row (and the
  openings no row explains) through a user's rules, in the kernel.
"""
