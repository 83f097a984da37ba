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
    EVENT exit

Mounts: ``--vod NAME=PATH`` serves an H.264/AAC .mp4 at ``/vod/NAME`` (one pipeline per
client), ``--live NAME`` a shared live H.264 test stream at ``/NAME`` (``--live-audio`` adds AAC).
"""

from __future__ import annotations

import argparse
import base64
import itertools
import os
import re
import signal
import socket
import sys
import threading
import time
import warnings

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtsp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtsp, GstRtspServer  # noqa: E402

# "send-message" declares its context argument as a GObject; PyGObject warns once per run.
warnings.filterwarnings("ignore", message=".*G_VALUE_HOLDS_OBJECT.*")

_METHODS = (
    "options",
    "describe",
    "setup",
    "play",
    "pause",
    "teardown",
    "get-parameter",
    "set-parameter",
    "announce",
    "record",
)
_emit_lock = threading.Lock()


def emit(*parts: object) -> None:
    """One event per line, flushed at once: the reader thread in the test process waits on it."""
    line = "EVENT " + " ".join(str(p) for p in parts) + "\n"
    with _emit_lock:
        sys.stdout.write(line)
        sys.stdout.flush()


def vod_launch(path: str) -> str:
    """Pipeline from PEERS.md: the .mp4's own H.264 and AAC, payloaded without re-encoding."""
    return (
        f'( filesrc location="{path}" ! qtdemux name=d '
        "d.video_0 ! queue ! h264parse ! rtph264pay name=pay0 pt=96 config-interval=1 "
        "d.audio_0 ! queue ! aacparse ! rtpmp4gpay name=pay1 pt=97 )"
    )


def live_launch(audio: bool) -> str:
    """A live H.264 source cheap on 2 cores; a key frame a second so joiners start fast."""
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
    """Shared media keyed by path alone, so one media serves every client whatever host:port
    its URL names (clients behind a relay or a proxy name other ports)."""

    def do_gen_key(self, url: GstRtsp.RTSPUrl) -> str:
        return url.abspath


class LiveHolder:
    """An internal RTSP client that keeps a shared live mount playing (see Origin.hold_live).

    Blocking socket code, run off the main loop: the server answers from its own context.
    """

    def __init__(self, origin: Origin, port: int, path: str) -> None:
        host = origin.args.host
        self.udp: list[socket.socket] = []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind((host, 0))
        # Known before connect(), so on_client_connected can hide this client's events.
        origin.internal_ports.add(self.sock.getsockname()[1])
        self.sock.settimeout(5.0)
        self.sock.connect((host, port))
        self.cseq = 0
        self.session = ""
        self.headers: dict[str, str] = {}
        if origin.args.auth:
            token = base64.b64encode(origin.args.auth.encode()).decode()
            self.headers["Authorization"] = f"Basic {token}"
        url = f"rtsp://{host}:{port}{path}"
        status, _, sdp = self.request("DESCRIBE", url, {"Accept": "application/sdp"})
        if status != 200:
            raise RuntimeError(f"DESCRIBE {status}")
        controls = re.findall(r"^a=control:(\S+?)\r?$", sdp.decode("latin-1"), re.MULTILINE)
        for control in [c for c in controls if c != "*"]:
            rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            rtp.bind((host, 0))
            rtcp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            rtcp.bind((host, 0))
            self.udp += [rtp, rtcp]
            ports = f"{rtp.getsockname()[1]}-{rtcp.getsockname()[1]}"
            target = control if control.startswith("rtsp:") else f"{url}/{control}"
            status, hdrs, _ = self.request(
                "SETUP", target, {"Transport": f"RTP/AVP;unicast;client_port={ports}"}
            )
            if status != 200:
                raise RuntimeError(f"SETUP {status}")
            self.session = self.session or hdrs.get("session", "").split(";")[0]
        status, _, _ = self.request("PLAY", f"{url}/")
        if status != 200:
            raise RuntimeError(f"PLAY {status}")

    def request(
        self, method: str, url: str, extra: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        self.cseq += 1
        hdrs = {"CSeq": str(self.cseq), **self.headers, **(extra or {})}
        if self.session:
            hdrs["Session"] = self.session
        head = f"{method} {url} RTSP/1.0\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs.items())
        self.sock.sendall(head.encode() + b"\r\n")
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise RuntimeError("origin closed the holder connection")
            buf += chunk
        head_b, _, body = buf.partition(b"\r\n\r\n")
        lines = head_b.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        length = int(headers.get("content-length", "0"))
        while len(body) < length:
            chunk = self.sock.recv(65536)
            if not chunk:
                break
            body += chunk
        return int(lines[0].split()[1]), headers, body


class Origin:
    """Holds the server and logs what every client does through the server's signals."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.ids = itertools.count(1)
        self.internal_ports: set[int] = set()
        self.internal_clients: set[int] = set()
        self.internal_sessions: set[str] = set()
        self.client_sessions: set[str] = set()
        self.holders: list[LiveHolder] = []
        self.server = GstRtspServer.RTSPServer()
        self.server.set_address(args.host)
        self.server.set_service(str(args.port))
        self.pool = self.server.get_session_pool()
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
        self.live_paths = [f"/{name.strip('/')}" for name in args.live]
        for path in self.live_paths:
            mounts.add_factory(path, self.factory(live_launch(args.live_audio), shared=True))
        if args.max_sessions is not None:
            # GStreamer's own limit: the pool refuses session N+1 and SETUP gets 503. The live
            # holders take slots too, so they are added here and the exact client limit is
            # checked in on_pre_setup (same 503).
            self.pool.set_max_sessions(args.max_sessions + len(self.live_paths))
        self.server.connect("client-connected", self.on_client_connected)

    def setup_auth(self, userpass: str) -> None:
        """Basic auth on every mount: the test checks the 401 and the accepted retry."""
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

    def hold_live(self) -> None:
        """Keep one internal client playing each shared live mount for the origin's lifetime.

        GStreamer 1.22 races when several first clients arrive together on a cold shared
        mount: 503 on DESCRIBE, SETUP or PLAY, sometimes an abort in
        ``gst_rtsp_media_get_rates`` (a media prepared without a playing client aborts the same
        way). With one client already playing, joiners were served reliably. The holder takes
        its RTP over UDP into sockets nobody reads; its events are not reported.
        """
        port = self.server.get_bound_port()
        for path in self.live_paths:
            for attempt in range(20):
                try:
                    self.holders.append(LiveHolder(self, port, path))
                    break
                except (OSError, RuntimeError) as e:
                    print(f"live holder {path} attempt {attempt}: {e}", file=sys.stderr, flush=True)
                    time.sleep(0.2)
            else:
                raise RuntimeError(f"cannot start live mount {path}")

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
        port = _peer_port(conn)
        client.connect("new-session", self.on_new_session, cid)
        if port in self.internal_ports:
            self.internal_clients.add(cid)
            return
        emit("client-connected", cid, f"{conn.get_ip()}:{port}")
        client.connect("closed", lambda _c: emit("client-closed", cid))
        for m in _METHODS:
            client.connect(f"pre-{m}-request", self.on_pre_request, cid)
        client.connect("send-message", self.on_send_message, cid)

    def on_pre_request(self, _client: object, ctx: GstRtspServer.RTSPContext, cid: int) -> int:
        """Logged before the server handles the request, so refused requests are counted too."""
        method, uri = "?", "?"
        req = ctx.request
        res, meth, req_uri, _ver = req.parse_request()
        if res == GstRtsp.RTSPResult.OK:
            method = GstRtsp.rtsp_method_as_text(meth)
            uri = req_uri
        emit("request", cid, method, uri)
        if method == "SETUP" and self.args.max_sessions is not None:
            res, _value = req.get_header(GstRtsp.RTSPHeaderField.SESSION, 0)
            new_session = res != GstRtsp.RTSPResult.OK
            if new_session and len(self.client_sessions) >= self.args.max_sessions:
                return GstRtsp.RTSPStatusCode.SERVICE_UNAVAILABLE
        return GstRtsp.RTSPStatusCode.OK

    def on_send_message(self, _client: object, _ctx: object, msg: object, cid: int) -> None:
        try:
            res, code, _reason, _ver = msg.parse_response()  # type: ignore[attr-defined]
        except (AttributeError, TypeError):
            return
        if res == GstRtsp.RTSPResult.OK:
            emit("response", cid, int(code))

    def on_new_session(self, _client: object, session: GstRtspServer.RTSPSession, cid: int) -> None:
        sid = session.get_sessionid()
        if cid in self.internal_clients:
            session.set_timeout(24 * 3600)
            self.internal_sessions.add(sid)
            return
        session.set_timeout(self.args.session_timeout)
        self.client_sessions.add(sid)
        emit("session-new", cid, sid)

    def on_session_removed(self, _pool: object, session: GstRtspServer.RTSPSession) -> None:
        sid = session.get_sessionid()
        if sid in self.client_sessions:
            self.client_sessions.discard(sid)
            emit("session-removed", sid)

    def cleanup(self) -> bool:
        """Expire timed-out sessions: the server does not do this by itself."""
        self.pool.cleanup()
        return True


def _peer_port(conn: GstRtsp.RTSPConnection | None) -> int:
    try:
        return int(conn.get_read_socket().get_remote_address().get_port())  # type: ignore[union-attr]
    except Exception:  # only used to tell internal clients apart
        return -1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8554, help="0 picks a free port (see 'ready')")
    p.add_argument("--vod", action="append", default=[], metavar="NAME=PATH")
    p.add_argument("--live", action="append", default=[], metavar="NAME")
    p.add_argument("--live-audio", action="store_true", help="add an AAC stream to live mounts")
    p.add_argument("--auth", metavar="USER:PASS", help="require Basic auth on every mount")
    p.add_argument(
        "--max-sessions", type=int, default=None, help="refuse SETUP of session N+1 (503)"
    )
    p.add_argument("--session-timeout", type=int, default=60, metavar="SECONDS")
    args = p.parse_args(argv)

    Gst.init(None)
    origin = Origin(args)
    loop = GLib.MainLoop()
    if origin.server.attach(None) == 0:
        print(f"cannot listen on {args.host}:{args.port}", file=sys.stderr, flush=True)
        return 2
    GLib.timeout_add_seconds(1, origin.cleanup)
    for sig in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_HIGH, sig, lambda: loop.quit() or False)

    failed: list[str] = []

    def start_live() -> None:
        # Blocking requests to our own server: they need the main loop running.
        try:
            origin.hold_live()
        except RuntimeError as e:
            print(e, file=sys.stderr, flush=True)
            failed.append(str(e))
            GLib.idle_add(lambda: loop.quit() or False)
            return
        emit("ready", origin.server.get_bound_port())

    threading.Thread(target=start_live, daemon=True).start()
    loop.run()
    emit("exit")
    os._exit(
        3 if failed else 0
    )  # skip GStreamer teardown of half-finished client pipelines: it can hang


if __name__ == "__main__":
    sys.exit(main())
