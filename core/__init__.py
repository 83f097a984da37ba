"""mediacache: a caching, splitting proxy for streaming media, extended by format plugins."""

from __future__ import annotations

__version__ = "0.1.0"
