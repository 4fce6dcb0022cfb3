"""The A/V Edge: STUN (RFC 8489) and TURN (RFC 8656, RFC 6062) server, MRAS credentials.

Sans-IO cores (:mod:`.stun`, :mod:`.framing`, :mod:`.turn`, :mod:`.mras`) and one asyncio adapter
(:mod:`.aio`), wrapped as lab services in :mod:`.service` (``av-edge``) and :mod:`.peer`
(``media-peer``).
"""

from __future__ import annotations

import logging

logging.getLogger(__name__).addHandler(logging.NullHandler())
