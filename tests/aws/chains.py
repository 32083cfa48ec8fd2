"""What the article chain's last function saw, shared by every Lambda version's environment.

Each version loads its handler module on its own; this module is imported
normally, so the lists are one for the whole test process.
"""

from __future__ import annotations

CHAINS: list[tuple[str, list[list[str]]]] = []
"""(user, [[function, version], ...]) of each order that reached send-email"""
FAILURES: list[tuple[str, str]] = []
"""(user, what failed) of each order a function could not handle"""
