"""Lab runners: each renders the one topology into running hosts.

``local`` (one asyncio process on loopback addresses) lives here; ``netns`` and ``compose``
arrive with the lab-runners issue.
"""
