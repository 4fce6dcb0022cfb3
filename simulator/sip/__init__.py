"""SIP for edgesim: the Access Edge proxy, its sans-IO cores and the lab emulators.

Sans-IO cores (no sockets, no clock; time is an argument):

- :mod:`.framing` Content-Length stream framing, RFC 5626 keep-alives, size limits
- :mod:`.validate` eager checks of the mandatory headers over :mod:`sipmessage`
- :mod:`.connection` one SIP connection: framing + validation + queued replies
- :mod:`.transaction` RFC 3261 section 17 transactions and timers (reliable transports only)
- :mod:`.proxy` the Access Edge's routing and federation policy, as actions

Adapters: :mod:`.aio` (listeners, connection table, timers), :mod:`.emulators` (Front End,
partner Edge, public IM provider, user agent) and :mod:`.service` (lab services).

Not implemented: UDP, SIP over WebSocket, forking, CANCEL matching across forks, NTLM/Kerberos.
"""

import logging

logging.getLogger(__name__).addHandler(logging.NullHandler())
