"""Live splitting: one origin feed per (format, live URL, variant), fanned out to every viewer.

Theory of operation
-------------------
The first viewer of a live stream owns the feed: its own origin session carries the media
(its PLAY is forwarded), and its layer hands every origin packet to one :class:`FanOut` per
channel instead of to its own sink. Later viewers of the same key are *joiners*: their PLAY is
answered by the proxy, and their sinks are added to the fan-outs. Every viewer, owner or
joiner, keeps its own origin control session (DESCRIBE, SETUP, keep-alives, TEARDOWN): the
accounting connection, so the origin counts every viewer but sends one stream.

Between the first viewer's decision and the origin's answer to its PLAY the feed is *starting*
(:class:`StartingFeed`): a viewer of the same key deciding then neither PLAYs at the origin nor
joins yet; it waits, and is told (a ``feed-start`` :class:`~mediacache.sansio.events.Notify`)
when the owner's PLAY succeeded (it joins) or failed (it decides again: the first to do so owns
the next attempt). So two viewers whose PLAYs cross never make two upstreams.

When the owner leaves while joiners remain, its origin session goes on in the background
(its layer keeps the origin connection; its client's access record is written) until the last
viewer has left and ``linger`` seconds have passed. Child proxies are ordinary clients: a child
asks its parent for the live URL, the parent splits it to each child once.

The fan-out is the per-packet hot path: ``FanOut.send`` is a loop over bound ``send`` methods,
one per TCP viewer and one per shared UDP socket (a ``sendmmsg`` batch of all its viewers);
no per-viewer parsing, no per-viewer allocation (the same bytes object goes to every sink).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mediacache.sansio.events import Notify
from mediacache.sansio.layer import Sink


class FanOut:
    """A sink that forwards to many sinks: one per viewer of one channel.

    Members that share a ``batch_group`` (UDP viewers of one shared socket) are kept in one
    batch sender per group, which their class makes (``make_batch``) and which sends each
    packet to all of them in one system call; members join and leave a batch in O(1). Other
    sinks (TCP viewers, rewriting sinks) are called one by one: a join or leave only marks
    their send list stale, rebuilt once at the next packet, so a thousand viewers leaving
    together cost O(N), not O(N^2).
    """

    __slots__ = (
        "_batches",
        "_members",
        "_sends",
        "_singles",
        "bytes_sent",
        "last",
        "packets_sent",
    )

    def __init__(self) -> None:
        self._members: dict[Sink, Any] = {}
        """Each member, with the batch that sends to it (None: it is called itself)."""
        self._batches: dict[object, Any] = {}
        self._singles: dict[Sink, None] = {}
        self._sends: list[Callable[[bytes], None]] | None = []
        self.bytes_sent = 0
        self.packets_sent = 0
        self.last: bytes = b""

    @property
    def sinks(self) -> list[Sink]:
        return list(self._members)

    def add(self, sink: Sink) -> None:
        if sink in self._members:
            return
        batch = None
        group = getattr(sink, "batch_group", None)
        if group is not None:
            batch = self._batches.get(group)
            if batch is None:
                batch = self._batches[group] = sink.make_batch()  # type: ignore[attr-defined]
            if not batch.add(sink):
                batch = None
        self._members[sink] = batch
        if batch is None:
            self._singles[sink] = None
        self._sends = None

    def remove(self, sink: Sink) -> None:
        if sink not in self._members:
            return
        batch = self._members.pop(sink)
        if batch is not None:
            batch.remove(sink)
        self._singles.pop(sink, None)
        self._sends = None

    def send(self, payload: bytes) -> None:
        sends = self._sends
        if sends is None:
            sends = self._sends = [b.send for b in self._batches.values() if len(b)]
            sends += [s.send for s in self._singles]
        for send in sends:
            send(payload)
        self.last = payload
        self.packets_sent += 1
        self.bytes_sent += len(payload)


@dataclass
class FeedTrack:
    """One track of a live feed: the relative control that names it, and its two fan-outs."""

    control: str
    rtp: FanOut = field(default_factory=FanOut)
    rtcp: FanOut = field(default_factory=FanOut)


@dataclass(eq=False)
class LiveFeed:
    key: tuple[str, str, str]
    tracks: dict[str, FeedTrack]
    owner: object
    viewers: set[object] = field(default_factory=set)
    posts: dict[object, Callable[[Any], None]] = field(default_factory=dict)
    """How to notify each joiner (its session's ``post``) when the feed ends."""
    ended: str | None = None
    idle_since: float | None = None
    """Since when the feed has had no viewer (its owner's session lingers, then ends it)."""

    def linger_over(self, now: float, linger: float) -> bool:
        """Asked about once a second by the owner's session: has the feed had no viewer for
        ``linger`` seconds? (A viewer coming back starts the count again.)"""
        if self.viewers:
            self.idle_since = None
            return False
        if self.idle_since is None:
            self.idle_since = now
            return False
        return now - self.idle_since >= linger

    def join(self, viewer: object, sinks: dict[str, tuple[Sink, Sink]]) -> None:
        for control, (rtp, rtcp) in sinks.items():
            track = self.tracks[control]
            track.rtp.add(rtp)
            track.rtcp.add(rtcp)
        self.viewers.add(viewer)

    def leave(self, viewer: object, sinks: dict[str, tuple[Sink, Sink]]) -> None:
        for control, (rtp, rtcp) in sinks.items():
            track = self.tracks.get(control)
            if track is not None:
                track.rtp.remove(rtp)
                track.rtcp.remove(rtcp)
        self.viewers.discard(viewer)

    def rtp_info(self, control: str) -> tuple[int, int] | None:
        """(next sequence number, last timestamp) of a track, for a joiner's RTP-Info."""
        track = self.tracks.get(control)
        if track is None or len(track.rtp.last) < 12:
            return None
        last = track.rtp.last
        seq = (int.from_bytes(last[2:4], "big") + 1) & 0xFFFF
        return seq, int.from_bytes(last[4:8], "big")


FEED_START = "feed-start"
"""Topic of the :class:`Notify` a waiting viewer gets when a starting feed started or failed."""


@dataclass(eq=False)
class StartingFeed:
    """A feed whose owner's PLAY is at the origin: other viewers of its key wait for it."""

    key: tuple[str, str, str]
    owner: object
    waiters: dict[object, Callable[[Any], None]] = field(default_factory=dict)
    """Each waiting viewer and how to notify it (its session's ``post``)."""

    def wake(self, detail: str) -> None:
        waiters, self.waiters = self.waiters, {}
        for post in waiters.values():
            post(Notify(FEED_START, detail))


@dataclass
class SplitterService:
    """Every live feed of the process (one event loop: no locking)."""

    linger: float = 5.0
    reconnect_timeout: float = 15.0
    feeds: dict[tuple[str, str, str], LiveFeed] = field(default_factory=dict)
    starting: dict[tuple[str, str, str], StartingFeed] = field(default_factory=dict)

    def get(self, key: tuple[str, str, str]) -> LiveFeed | None:
        feed = self.feeds.get(key)
        return feed if feed is not None and feed.ended is None else None

    def claim(
        self, key: tuple[str, str, str], viewer: object, post: Callable[[Any], None]
    ) -> bool:
        """The decision of a viewer with no feed to join: True if it owns the start of the
        feed of ``key`` (its PLAY may go to the origin), False if another viewer's start is
        under way (``viewer`` then waits for it: ``post`` gets a ``feed-start`` notice)."""
        starting = self.starting.get(key)
        if starting is None:
            self.starting[key] = StartingFeed(key, viewer)
            return True
        if starting.owner is viewer:
            return True
        starting.waiters[viewer] = post
        return False

    def release(self, key: tuple[str, str, str], viewer: object) -> None:
        """``viewer`` no longer starts the feed of ``key`` (its PLAY failed, or it left) or no
        longer waits for it. An owner's release wakes the waiters: each decides again."""
        starting = self.starting.get(key)
        if starting is None:
            return
        if starting.owner is viewer:
            del self.starting[key]
            starting.wake("failed")
        else:
            starting.waiters.pop(viewer, None)

    def start(self, key: tuple[str, str, str], owner: object, controls: list[str]) -> LiveFeed:
        """The owner's PLAY succeeded: the feed exists, and the viewers waiting join it."""
        feed = LiveFeed(key, {c: FeedTrack(c) for c in controls}, owner)
        self.feeds[key] = feed
        starting = self.starting.get(key)
        if starting is not None and starting.owner is owner:
            del self.starting[key]
            starting.wake("started")
        return feed

    def end(self, feed: LiveFeed, reason: str) -> None:
        """The feed is over: no new joiner finds it, and every viewer but its owner is told
        (a ``feed-ended`` :class:`~mediacache.sansio.events.Notify` through its ``post``)."""
        feed.ended = reason
        if self.feeds.get(feed.key) is feed:
            del self.feeds[feed.key]
        for viewer in list(feed.viewers - {feed.owner}):
            post = feed.posts.get(viewer)
            if post is not None:
                post(Notify("feed-ended", reason))
