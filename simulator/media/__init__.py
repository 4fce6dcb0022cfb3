"""The A/V Edge: STUN (RFC 8489) and TURN (RFC 8656, RFC 6062) server and client, MRAS credentials.

Sans-IO cores: the server (:mod:`.turn`, with :mod:`.allocations`, :mod:`.channels` and
:mod:`.tcprelay`), the client (:mod:`.client`), the codec and framing (:mod:`.stun`,
:mod:`.framing`, :mod:`.dialect`), credentials (:mod:`.auth`), the peer policy (:mod:`.policy`)
and MRAS (:mod:`.mras`); one asyncio adapter for both ends (:mod:`.aio`), wrapped as lab
services in :mod:`.service` (``av-edge``) and :mod:`.peer` (``media-peer``).
"""

from __future__ import annotations

import logging

logging.getLogger(__name__).addHandler(logging.NullHandler())
