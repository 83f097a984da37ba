"""Cache decisions and the cache fill for RTSP formats. Pure functions and one recorder.

Which clips are cached (DESIGN.md "Caching of on-demand clips", issue 3 point 6):

* only on-demand clips: the SDP range must have an end (``npt=0-4.2`` or GStreamer's
  ``npt=now-4.2``); an open range (``npt=now-``, ``npt=0-``) or none at all means live or
  unknown, which is passed through (and later split); so does Real's session-level
  ``a=LiveStream:integer;1``, whatever the range says (the origin says it is live);
* not when the origin says ``Cache-Control: no-cache`` or ``no-store`` on DESCRIBE;
* not content that needed authentication, where the format forbids caching it (the dialect's
  ``cache_authenticated``; a plugin hook may decide otherwise per URL);
* a fill must start at npt 0 at normal speed; a client seeking during its fill ends the fill.

The variant key of an RTSP clip is the set of tracks set up (their controls relative to the
presentation URL): a client that sets up only the audio track caches only that variant. A
QuickTime reference movie's alternates are separate URLs, hence separate keys already.

Validators: the origin's ETag and Last-Modified when it sends them, and a digest of the SDP
with the lines that change per request removed (``o=`` and the per-session ``a=ssrc:``).
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from mediacache.cache.objects import TrackMeta
from mediacache.cache.store import Fill
from mediacache.rtp import rtcp_has_bye, rtp_seq
from mediacache.rtsp.headers import RtpInfo
from mediacache.rtsp.message import Headers
from mediacache.rtsp.sdp import SessionDescription

VOLATILE_SDP_PREFIXES = ("o=", "a=ssrc:")


def sdp_digest(sdp: bytes) -> str:
    lines = [
        line.strip()
        for line in sdp.decode("utf-8", "replace").splitlines()
        if line.strip() and not line.startswith(VOLATILE_SDP_PREFIXES)
    ]
    return hashlib.blake2b("\n".join(lines).encode(), digest_size=16).hexdigest()


def validators_of(headers: Headers, sdp: bytes) -> dict[str, str]:
    out = {"sdp-digest": sdp_digest(sdp)}
    for name in ("ETag", "Last-Modified"):
        value = headers.get(name)
        if value:
            out[name.lower()] = value
    return out


def still_valid(stored: dict[str, str], fresh: dict[str, str]) -> bool:
    """A changed validator the origin sends now means the stored object is stale."""
    return all(stored.get(k) == v for k, v in fresh.items() if k in stored or k == "sdp-digest")


def is_on_demand(sd: SessionDescription) -> bool:
    """A clip with a known end, not marked live (see the module docstring)."""
    if any(v.strip().lower() == "integer;1" for v in sd.attributes("LiveStream")):
        return False
    ranges = [r for r in (sd.range, *(m.range for m in sd.media)) if r is not None]
    return bool(ranges) and all(r.end is not None for r in ranges)


def duration_of(sd: SessionDescription) -> float | None:
    r = sd.range
    if r is not None and r.end is not None:
        return r.end - (r.start or 0.0)
    return None


def forbids_caching(headers: Headers) -> bool:
    value = ",".join(headers.get_all("Cache-Control")).lower()
    return "no-cache" in value or "no-store" in value


def variant_key(relative_controls: list[str]) -> str:
    return ",".join(sorted(relative_controls))


def relative_control(base: str, url: str) -> str:
    """``url`` relative to the presentation ``base`` when under it, else the whole URL."""
    b = base if base.endswith("/") else base + "/"
    return url[len(b) :] if url.startswith(b) else url


def clock_rate_of(sd: SessionDescription, index: int) -> tuple[int, str]:
    """(clock rate, encoding name) of media ``index`` from its first rtpmap."""
    media = sd.media[index]
    for value in media.attributes("rtpmap"):
        _, _, rest = value.partition(" ")
        parts = rest.split("/")
        if len(parts) >= 2 and parts[1].isdigit():
            return int(parts[1]), parts[0]
    return 90000, ""


@dataclass
class RecordedTrack:
    meta_index: int
    expected_seq: int | None = None
    ended: bool = False


@dataclass
class Recorder(ABC):
    """Writes one MISS session's media into a fill while it is forwarded; one per dialect.

    ``time`` of a packet is its arrival on the clip's timeline: seconds since the PLAY, less
    any time the session spent paused, so the cache replays the origin's own pacing. A gap
    (impossible over TCP unless the origin skipped packets) aborts the fill (``failed``);
    the end of every track completes it.
    """

    fill: Fill
    started: float
    paused_total: float = 0.0
    paused_at: float | None = None
    failed: str | None = None
    received_time: float = 0.0

    @property
    @abstractmethod
    def channels(self) -> frozenset[int]:
        """The origin interleaved channels whose frames :meth:`on_frame` wants."""

    @abstractmethod
    def on_frame(self, channel: int, payload: bytes, now: float) -> bool:
        """Record one origin frame; True once the clip was received whole (commit it)."""

    def clip_time(self, now: float) -> float:
        t = now - self.started - self.paused_total
        self.received_time = t
        return t

    def pause(self, now: float) -> None:
        if self.paused_at is None:
            self.paused_at = now

    def resume(self, now: float) -> None:
        if self.paused_at is not None:
            self.paused_total += now - self.paused_at
            self.paused_at = None


@dataclass
class FillRecorder(Recorder):
    """The RTP recorder: a sequence gap aborts the fill, RTCP BYE on every track ends it."""

    rtp_tracks: dict[int, RecordedTrack] = field(default_factory=dict)
    rtcp_tracks: dict[int, RecordedTrack] = field(default_factory=dict)

    @property
    def channels(self) -> frozenset[int]:
        return frozenset(self.rtp_tracks) | frozenset(self.rtcp_tracks)

    def on_frame(self, channel: int, payload: bytes, now: float) -> bool:
        if channel in self.rtp_tracks:
            self.on_rtp(channel, payload, now)
            return False
        return channel in self.rtcp_tracks and self.on_rtcp(channel, payload)

    def on_rtp(self, channel: int, payload: bytes, now: float) -> None:
        track = self.rtp_tracks[channel]
        if len(payload) < 12:
            self.failed = "short RTP packet"
            return
        seq = rtp_seq(payload)
        if track.expected_seq is not None and seq != track.expected_seq:
            self.failed = f"RTP sequence gap on track {track.meta_index}"
            return
        track.expected_seq = (seq + 1) & 0xFFFF
        self.fill.add_packet(track.meta_index, self.clip_time(now), payload)

    def on_rtcp(self, channel: int, payload: bytes) -> bool:
        """True once every track said BYE: the clip was received whole."""
        track = self.rtcp_tracks[channel]
        if rtcp_has_bye(payload):
            track.ended = True
        return all(t.ended for t in self.rtcp_tracks.values())


def track_metas(
    sd: SessionDescription,
    controls: list[str],
    media_indexes: list[int],
    rtp_info: list[RtpInfo],
    npt_start: float,
) -> list[TrackMeta]:
    """The stored description of each set-up track, with the origin's RTP-Info mapping."""
    metas = []
    for i, (control, media_index) in enumerate(zip(controls, media_indexes, strict=True)):
        rate, codec = clock_rate_of(sd, media_index)
        info = next((x for x in rtp_info if x.url.rstrip("/") == control.rstrip("/")), None)
        if info is None and i < len(rtp_info):
            info = rtp_info[i]
        extra = {"media-index": str(media_index), "npt": repr(npt_start)}
        if info is not None and info.rtptime is not None:
            extra["rtptime"] = str(info.rtptime)
        metas.append(
            TrackMeta(track_id=i, control=control, clock_rate=rate, codec=codec, extra=extra)
        )
    return metas
