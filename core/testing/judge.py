"""How tests decide that two players received the same media."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence


def by_stream(packets: Iterable[Sequence[object]]) -> dict[int, list[tuple[object, ...]]]:
    """framemd5-style (stream, size, hash) rows grouped per stream, in order.

    Two sessions of the same clip must carry the same packets per stream; how a player
    interleaves the streams depends on arrival timing and RTCP clock mapping, which a cache
    replay legitimately changes (PEERS.md: compare stream index, size and hash).
    """
    out: dict[int, list[tuple[object, ...]]] = defaultdict(list)
    for row in packets:
        out[int(row[0])].append(tuple(row[1:]))  # type: ignore[call-overload]
    return dict(out)


def same_packets(a: Iterable[Sequence[object]], b: Iterable[Sequence[object]]) -> bool:
    return by_stream(a) == by_stream(b)
