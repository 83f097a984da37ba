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

When the owner's client leaves (or TEARDOWNs) while joiners remain, the feed is *handed over*
so that the origin counts only viewers that are there: the owner's session goes on in the
background only until the latest joiner still present (:meth:`SplitterService.hand_over`,
a ``feed-handover`` :class:`~mediacache.sansio.events.Notify`) has sent PLAY on its own
accounting session (already SETUP on the same tracks). At that PLAY's 200 the joiner owns the
feed, synchronously (:meth:`SplitterService.take_over`): the former owner is detached at once
(its origin's packets reach no fan-out any more, so no viewer gets a packet twice), then told
(``feed-handed-over``) to TEARDOWN its origin session and close. If the joiner's PLAY fails or
it leaves meanwhile, the next joiner is asked; with none left the former owner carries the feed
in the background as before, until the last viewer left and ``linger`` seconds passed (a viewer
that joins such a feed is asked to take it over). When the last viewer leaves, the owner
lingers: one origin session for no viewer, for ``linger`` seconds, for a quick rejoin. (The
RTSP and MMS layers both hand over; an MMS successor sends StartPlaying on its accounting
connection and drops the packets its viewers had by LocationId: see ``mediacache_wmt.layer``.)

The successor's stream may differ from what the viewers had (an origin may give each session
its own SSRC, sequence and timestamp bases): one :class:`Continuity` per track, between the
successor's origin channels and the fan-outs, looks at its first RTP packet. Same SSRC and a
near sequence number (a shared live source): packets the viewers had are dropped, then the
origin channel goes straight to the fan-out again (no per-packet cost). Otherwise every packet
is rewritten once, in the feed path (not per viewer): sequence numbers go on from the last one
sent, the SSRC stays, timestamps go on from the last one plus the wall-clock time since the
switch at the track's clock rate; RTCP's SSRCs and the sender report's RTP timestamp alike. A
dialect that is not RTP brings its own (``RtspDialect.feed_continuity``: Real's renumbers RDT).
Child proxies are ordinary clients: a child asks its parent for the live URL, the parent splits
it to each child once.

The fan-out is the per-packet hot path: ``FanOut.send`` is a loop over bound ``send`` methods,
one per TCP viewer and one per shared UDP socket (a ``sendmmsg`` batch of all its viewers);
no per-viewer parsing, no per-viewer allocation (the same bytes object goes to every sink).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mediacache.rtp import restamp_rtcp, rewrite_rtp, rtp_seq, rtp_ssrc, rtp_timestamp
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
    orphaned: bool = False
    """The owner's client left: its session carries the feed only until a joiner takes over."""
    successor: object | None = None
    """The joiner asked to take the feed over (its PLAY is at the origin), if any."""
    passed_over: set[object] = field(default_factory=set)
    """Joiners that could not take the feed over (their PLAY failed): not asked again."""
    detach: Callable[[], None] | None = None
    """The owner's: stop handing its origin's packets to the fan-outs (at a take-over)."""
    owner_post: Callable[[Any], None] | None = None
    """How to notify the owner (its session's ``post``) that another session took over."""

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


FEED_HANDOVER = "feed-handover"
"""Topic of the :class:`Notify` a joiner gets when it is to take the feed over (PLAY)."""
FEED_HANDED_OVER = "feed-handed-over"
"""Topic of the :class:`Notify` the former owner gets once a joiner took its feed over."""
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

    def hand_over(self, feed: LiveFeed) -> object | None:
        """The owner's client left: ask the latest joiner still present (and not passed
        over) to take the feed over (a ``feed-handover`` notice through its ``post``). The
        joiner asked, or None when no joiner is left (the owner's session carries on).

        The latest, not the earliest: viewers tend to leave in the order they came (the
        oldest first), so the newest one is the least likely to hand the feed on again soon;
        asking the earliest made a chain of handovers, one per leaving viewer."""
        feed.orphaned = True
        if feed.ended is not None or feed.successor is not None:
            return feed.successor
        for viewer, post in reversed(feed.posts.items()):
            if viewer not in feed.passed_over:
                feed.successor = viewer
                post(Notify(FEED_HANDOVER, "the owner left"))
                return viewer
        return None

    def take_over(
        self,
        feed: LiveFeed,
        successor: object,
        detach: Callable[[], None],
        post: Callable[[Any], None],
    ) -> None:
        """``successor``'s PLAY at the origin succeeded: it owns the feed from now on. The
        former owner is detached at once (its packets no longer reach the fan-outs) and told
        (``feed-handed-over``) to end its origin session."""
        former_detach, former_post = feed.detach, feed.owner_post
        feed.owner, feed.detach, feed.owner_post = successor, detach, post
        feed.successor, feed.orphaned = None, False
        feed.passed_over.clear()
        feed.posts.pop(successor, None)
        if former_detach is not None:
            former_detach()
        if former_post is not None:
            former_post(Notify(FEED_HANDED_OVER, "a joiner took the feed over"))

    def take_over_failed(self, feed: LiveFeed, viewer: object) -> object | None:
        """``viewer`` cannot take the feed over (its PLAY failed, or it left): the next
        joiner is asked. The joiner asked, or None."""
        if feed.successor is not viewer:
            return None
        feed.successor = None
        feed.passed_over.add(viewer)
        return self.hand_over(feed) if feed.orphaned else None


_NEAR = 3000
"""Sequence numbers this close (either way) to the last one sent, under the same SSRC, are
taken for the same stream (a shared live source), not a new one."""


class Continuity:
    """Joins a successor's stream of one track to what the track's viewers had, once in the
    feed path (see the module docstring). It sits in the successor's layer as the sink of its
    origin's RTP (``rtp``) and RTCP (``rtcp``) channels; when nothing needs rewriting it puts
    the fan-outs back there itself (``route``), so the common case costs nothing per packet."""

    __slots__ = (
        "_clock",
        "_dseq",
        "_dts",
        "_rate",
        "_route",
        "_since",
        "_ssrc",
        "_their_ssrc",
        "mode",
        "rtcp",
        "rtp",
        "track",
    )

    def __init__(
        self,
        track: FeedTrack,
        clock_rate: int,
        since: float,
        clock: Callable[[], float],
        route: Callable[[Sink, Sink], None],
    ) -> None:
        self.track = track
        self._rate = clock_rate
        self._since = since
        self._clock = clock
        self._route = route
        self._dseq = self._dts = self._ssrc = self._their_ssrc = 0
        self.mode = "first"
        """first (no RTP packet seen yet) | same (dropping what viewers had) | rewrite"""
        self.rtp = _Bound(self._rtp)
        self.rtcp = _Bound(self._rtcp)

    def _rtp(self, payload: bytes) -> None:
        fan = self.track.rtp
        if self.mode == "rewrite":
            if len(payload) < 12:
                return  # not RTP
            seq, ts = rtp_seq(payload), rtp_timestamp(payload)
            fan.send(rewrite_rtp(payload, seq + self._dseq, ts + self._dts, self._ssrc))
            return
        last = fan.last
        if len(payload) < 12 or len(last) < 12 or payload[0] & 0xC0 != 0x80:
            self._direct()  # nothing to continue (or not RTP): as it comes
            fan.send(payload)
            return
        seq, ts, ssrc = rtp_seq(payload), rtp_timestamp(payload), rtp_ssrc(payload)
        last_seq, last_ts, last_ssrc = rtp_seq(last), rtp_timestamp(last), rtp_ssrc(last)
        ahead = (seq - last_seq) & 0xFFFF
        if ssrc == last_ssrc and (ahead <= _NEAR or ahead >= 0x10000 - _NEAR):
            self.mode = "same"
            if ahead == 0 or ahead >= 0x8000:
                return  # the viewers had it from the former owner
            self._direct()
            fan.send(payload)
            return
        gap = max(0.0, self._clock() - self._since)
        self._dseq = (last_seq + 1 - seq) & 0xFFFF
        self._dts = (last_ts + round(gap * self._rate) - ts) & 0xFFFFFFFF
        self._ssrc, self._their_ssrc = last_ssrc, ssrc
        self.mode = "rewrite"
        self._rtp(payload)

    def _rtcp(self, payload: bytes) -> None:
        if self.mode != "rewrite":
            return  # before the first RTP packet: which SSRC it will be is not known yet
        self.track.rtcp.send(restamp_rtcp(payload, self._their_ssrc, self._ssrc, self._dts))

    def _direct(self) -> None:
        self.mode = "direct"
        self._route(self.track.rtp, self.track.rtcp)


class _Bound:
    """A sink that calls one function (a :class:`Continuity` side)."""

    __slots__ = ("bytes_sent", "packets_sent", "send")

    def __init__(self, send: Callable[[bytes], None]) -> None:
        self.send = send
        self.bytes_sent = 0
        self.packets_sent = 0
