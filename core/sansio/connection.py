"""A connection as the sans-I/O world sees it: an identity plus the address, no socket."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Literal

_ids = itertools.count(1)


@dataclass(eq=False, slots=True)
class Connection:
    """One TCP connection. Identity-hashed, so layers can key dicts by it.

    For a ``client`` connection ``peer`` is the client's address; for an ``origin`` connection
    it is where the core should connect (origin or parent proxy) when a layer asks it to.
    """

    role: Literal["client", "origin"]
    peer: tuple[str, int]
    local: tuple[str, int] | None = None
    id: int = field(default_factory=lambda: next(_ids))
    connected: bool = False
    closed: bool = False

    def __repr__(self) -> str:
        return f"<{self.role}#{self.id} {self.peer[0]}:{self.peer[1]}>"
