#!/usr/bin/python3
"""A real RTSP/RTP origin for tests: the GStreamer RTSP server, driven from the command line.

GStreamer's Python bindings exist only for Debian's ``/usr/bin/python3``, so this file runs as a
separate process (see ``mediacache.testing.peers.GstRtspOrigin``); it must not import anything
from ``mediacache``. It prints one flushed line per event to stdout so the test process can count
what the origin saw::

    EVENT ready <port>
    EVENT client-connected <client-id> <ip>:<port>
    EVENT client-closed <client-id>
    EVENT request <client-id> <METHOD> <url>
    EVENT response <client-id> <status-code>
    EVENT session-new <client-id> <session-id>
    EVENT session-removed <session-id>

Mounts: ``--vod NAME=PATH`` serves an H.264/AAC .mp4 at ``/vod/NAME`` (one pipeline per
client), ``--live NAME`` a shared live H.264 test stream at ``/NAME`` (``--live-audio`` adds AAC).
"""

from __future__ import annotations

import argparse
import itertools
import os
import signal
import sys
import threading
import warnings

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtsp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtsp, GstRtspServer  # noqa: E402

# "send-message" declares its context argument as a GObject; PyGObject warns once per run.
warnings.filterwarnings("ignore", message=".*G_VALUE_HOLDS_OBJECT.*")

_METHODS = ("options", "describe", "setup", "play", "pause", "teardown",
            "get-parameter", "set-parameter", "announce", "record")


def emit(*parts: object) -> None:
    """One event per line, flushed at once: the reader thread in the test process waits on it."""
    sys.stdout.write("EVENT " + " ".join(str(p) for p in parts) + "\n")
    sys.stdout.flush()


def vod_launch(path: str) -> str:
    """Pipeline from PEERS.md: the .mp4's own H.264 and AAC, payloaded without re-encoding."""
    loc = GLib.shell_quote(path) if " " in path else path
    return (
        f"( filesrc location={loc} ! qtdemux name=d "
        "d.video_0 ! queue ! h264parse ! rtph264pay name=pay0 pt=96 config-interval=1 "
        "d.audio_0 ! queue ! aacparse ! rtpmp4gpay name=pay1 pt=97 )"
    )


def live_launch(audio: bool) -> str:
    """A live H.264 source cheap enough for 2 cores; one key frame a second so joiners start fast."""
    video = (
        "videotestsrc is-live=true pattern=ball "
        "! video/x-raw,width=320,height=240,framerate=25/1 ! videoconvert "
        "! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=25 bitrate=400 "
        "! video/x-h264,profile=baseline ! rtph264pay name=pay0 pt=96 config-interval=1"
    )
    if not audio:
        return f"( {video} )"
    sound = (
        "audiotestsrc is-live=true wave=sine freq=440 "
        "! audioconvert ! audioresample ! audio/x-raw,rate=44100,channels=1 "
        "! avenc_aac bitrate=64000 ! aacparse ! rtpmp4gpay name=pay1 pt=97"
    )
    return f"( {video} {sound} )"


class SharedFactory(GstRtspServer.RTSPMediaFactory):
    """A shared factory whose media is keyed by path alone, so one media serves every client
    whatever host:port its URL names (clients behind a relay or a proxy use other ports)."""

    def do_gen_key(self, url: GstRtsp.RTSPUrl) -> str:
        return url.abspath


class Origin:
    """Holds the server and logs what every client does through the server's signals."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.ids = itertools.count(1)
        self.server = GstRtspServer.RTSPServer()
        self.server.set_address(args.host)
        self.server.set_service(str(args.port))
        self.pool = self.server.get_session_pool()
        if args.max_sessions is not None:
            # The pool refuses to create session N+1; the client sees the SETUP answer.
            self.pool.set_max_sessions(args.max_sessions)
        self.pool.connect("session-removed", self.on_session_removed)
        self.permissions = None
        if args.auth:
            self.setup_auth(args.auth)
        mounts = self.server.get_mount_points()
        for spec in args.vod:
            name, _, path = spec.partition("=")
            if not name or not path:
                raise SystemExit(f"--vod wants NAME=PATH, got {spec!r}")
            mounts.add_factory(f"/vod/{name}", self.factory(vod_launch(path), shared=False))
        self.warm: list[GstRtspServer.RTSPMedia] = []
        self.live_factories: dict[str, GstRtspServer.RTSPMediaFactory] = {}
        for name in args.live:
            path = f"/{name.strip('/')}"
            f = self.factory(live_launch(args.live_audio), shared=True)
            self.live_factories[path] = f
            mounts.add_factory(path, f)
        self.server.connect("client-connected", self.on_client_connected)

    def setup_auth(self, userpass: str) -> None:
        """Basic auth for every mount: the test checks the 401 and the accepted retry."""
        user, _, password = userpass.partition(":")
        auth = GstRtspServer.RTSPAuth()
        token = GstRtspServer.RTSPToken()
        token.set_string("media.factory.role", "user")
        auth.add_basic(GstRtspServer.RTSPAuth.make_basic(user, password), token)
        self.server.set_auth(auth)
        perms = GstRtspServer.RTSPPermissions()
        perms.add_permission_for_role("user", "media.factory.access", True)
        perms.add_permission_for_role("user", "media.factory.construct", True)
        self.permissions = perms

    def prepare_live(self) -> None:
        """Construct and prepare each shared live media before any client comes.

        Several first clients arriving together on a cold shared mount race its preparation
        and get 503 on SETUP or PLAY (GStreamer 1.22). The extra prepare held here also keeps
        the media prepared after the last client leaves, as a real live origin would be.
        """
        port = self.server.get_bound_port()
        for path, f in self.live_factories.items():
            res, url = GstRtsp.RTSPUrl.parse(f"rtsp://{self.args.host}:{port}{path}")
            media = f.construct(url) if res == GstRtsp.RTSPResult.OK else None
            if media is None or not media.prepare(None):
                raise SystemExit(f"cannot prepare live mount {path}")
            self.warm.append(media)

    def factory(self, launch: str, *, shared: bool) -> GstRtspServer.RTSPMediaFactory:
        f = SharedFactory() if shared else GstRtspServer.RTSPMediaFactory()
        f.set_launch(launch)
        f.set_shared(shared)
        if self.permissions is not None:
            f.set_permissions(self.permissions)
        return f

    def on_client_connected(self, _server: object, client: GstRtspServer.RTSPClient) -> None:
        cid = next(self.ids)
        conn = client.get_connection()
        peer = f"{conn.get_ip()}:{_peer_port(conn)}" if conn is not None else "?"
        emit("client-connected", cid, peer)
        client.connect("closed", lambda _c: emit("client-closed", cid))
        client.connect("new-session", lambda _c, s: self.on_new_session(cid, s))
        for m in _METHODS:
            client.connect(f"pre-{m}-request", self.on_pre_request, cid)
        client.connect("send-message", self.on_send_message, cid)

    def on_pre_request(self, _client: object, ctx: GstRtspServer.RTSPContext, cid: int) -> int:
        """Logged before the server handles the request, so refused requests are counted too."""
        method, uri = "?", "?"
        req = ctx.request
        if req is not None:
            res, meth, req_uri, _ver = req.parse_request()
            if res == GstRtsp.RTSPResult.OK:
                method = GstRtsp.rtsp_method_as_text(meth)
                uri = req_uri
        emit("request", cid, method, uri)
        return GstRtsp.RTSPStatusCode.OK

    def on_send_message(self, _client: object, _ctx: object, msg: object, cid: int) -> None:
        try:
            res, code, _reason, _ver = msg.parse_response()  # type: ignore[attr-defined]
        except (AttributeError, TypeError):
            return
        if res == GstRtsp.RTSPResult.OK:
            emit("response", cid, int(code))

    def on_new_session(self, cid: int, session: GstRtspServer.RTSPSession) -> None:
        session.set_timeout(self.args.session_timeout)
        emit("session-new", cid, session.get_sessionid())

    def on_session_removed(self, _pool: object, session: GstRtspServer.RTSPSession) -> None:
        emit("session-removed", session.get_sessionid())

    def cleanup(self) -> bool:
        """Expire timed-out sessions; the server does not do this by itself."""
        self.pool.cleanup()
        return True


def _peer_port(conn: GstRtsp.RTSPConnection) -> str:
    try:
        addr = conn.get_read_socket().get_remote_address()
        return str(addr.get_port())
    except Exception:  # pragma: no cover - only for the log line
        return "?"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8554, help="0 picks a free port")
    p.add_argument("--vod", action="append", default=[], metavar="NAME=PATH")
    p.add_argument("--live", action="append", default=[], metavar="NAME")
    p.add_argument("--live-audio", action="store_true", help="add an AAC stream to live mounts")
    p.add_argument("--auth", metavar="USER:PASS", help="require Basic auth on every mount")
    p.add_argument("--max-sessions", type=int, default=None)
    p.add_argument("--session-timeout", type=int, default=60)
    args = p.parse_args(argv)

    Gst.init(None)
    origin = Origin(args)
    if os.environ.get("MAXTHREADS"):
        origin.server.get_thread_pool().set_max_threads(int(os.environ["MAXTHREADS"]))
    loop = GLib.MainLoop()
    if origin.server.attach(None) == 0:
        print(f"cannot listen on {args.host}:{args.port}", file=sys.stderr, flush=True)
        return 2
    GLib.timeout_add_seconds(1, origin.cleanup)
    for sig in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_HIGH, sig, lambda: loop.quit() or False)

    def warm_up() -> None:
        # prepare() blocks until the pipeline prerolls, which needs the main loop running.
        try:
            if not os.environ.get("NOWARM"):
                origin.prepare_live()
        except SystemExit as e:
            print(e, file=sys.stderr, flush=True)
            GLib.idle_add(lambda: loop.quit() or False)
            return
        emit("ready", origin.server.get_bound_port())

    threading.Thread(target=warm_up, daemon=True).start()
    loop.run()
    emit("exit")
    sys.stdout.flush()
    os._exit(0)  # skip GStreamer teardown of half-finished client pipelines: it can hang


if __name__ == "__main__":
    sys.exit(main())
