"""edgesim: a lab simulator of the Lync Server 2013 Edge Server.

The package emulates the Edge's listeners (Access Edge SIP, XMPP proxy, A/V Edge), the peers
around it (Front End, federated partners, public IM providers, XMPP servers) and the lab that
connects them, so that firewall rules between the lab's zones can be tested flow by flow.
"""

import logging

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())
