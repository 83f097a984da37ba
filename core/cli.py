"""The command line: ``mediacache serve | plugins | check-config``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from loguru import logger

from mediacache import __version__
from mediacache.config import Config, format_settings, load_config, validate_routes
from mediacache.errors import ConfigError
from mediacache.logs import setup_logging
from mediacache.plugins import PluginHost, load_plugins

if TYPE_CHECKING:
    from mediacache.server.app import ProxyServer


def _run_until_signal(server: ProxyServer) -> int:
    """Serve until SIGINT or SIGTERM; 1 when the server cannot start (a port in use...)."""
    from mediacache.server.app import serve_forever

    async def main() -> None:
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)  # type: ignore[union-attr]
        with contextlib.suppress(asyncio.CancelledError):
            await serve_forever(server)

    try:
        asyncio.run(main())
    except OSError as exc:
        logger.error("cannot start: {}", exc)
        return 1
    return 0


def _load(path: str | None) -> tuple[Config, PluginHost]:
    host = load_plugins()
    config = load_config(path)
    for spec in host.registry:  # decode every format section now: errors stop the start
        format_settings(config, spec.name, spec.config_type)
    return config, host


def cmd_serve(args: argparse.Namespace) -> int:
    from mediacache.server.app import ProxyServer

    try:
        config, host = _load(args.config)
    except ConfigError as exc:
        print(f"mediacache: {exc}", file=sys.stderr)
        return 2
    setup_logging(config.log)
    for failure in host.failures:
        logger.error("plugin {} failed to load: {}", failure.name, failure.error)
    if not len(host.registry):
        logger.warning("no format plugin is installed (pip install mediacache-quicktime ...)")
    server = ProxyServer(config, host)
    code = _run_until_signal(server)
    logger.info("stopped")
    return code


def cmd_plugins(args: argparse.Namespace) -> int:
    host = load_plugins()
    if not len(host.registry):
        print("no format is installed")
    for spec in host.registry:
        d = spec.defaults
        print(f"{spec.name} {spec.version} (plugin {host.registry.owners[spec.name]})")
        print(f"  {spec.description}")
        print(f"  protocols: {', '.join(spec.protocols)}")
        print(
            f"  listen: {d.listen}  origin port: {d.origin_port}  udp ports: {d.udp_ports or '-'}"
        )
    for failure in host.failures:
        print(f"FAILED {failure.name} ({failure.target}): {failure.error}")
        if args.verbose and failure.detail:
            print("  " + failure.detail.replace("\n", "\n  "))
    return 1 if host.failures and args.strict else 0


def cmd_origin(args: argparse.Namespace) -> int:
    """Run a format's reference origin (for formats with no open-source server)."""
    from pathlib import Path

    from mediacache.config import LogConfig
    from mediacache.formats import OriginOptions
    from mediacache.server.app import ProxyServer

    setup_logging(LogConfig(level=args.log_level))
    host = load_plugins()
    spec = host.registry.get(args.format)
    if spec is None or not spec.has_reference_origin:
        names = [s.name for s in host.registry if s.has_reference_origin]
        print(
            f"mediacache: no reference origin for {args.format!r} (have: {names})", file=sys.stderr
        )
        return 2
    options = OriginOptions(
        root=Path(args.root),
        listen=args.listen,
        udp_ports=args.udp_ports or "",
        max_sessions=args.max_sessions,
        auth=args.auth,
    )
    try:
        server = ProxyServer.reference_origin(spec, options, host)
    except ValueError as exc:  # a malformed option the plugin refused (e.g. --auth)
        print(f"mediacache: {exc}", file=sys.stderr)
        return 2
    return _run_until_signal(server)


def _admin_base(args: argparse.Namespace) -> str:
    if args.admin:
        return args.admin.rstrip("/") if "://" in args.admin else f"http://{args.admin}"
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        raise SystemExit(f"mediacache: {exc}") from None
    host, port = config.admin.listen.rsplit(":", 1)
    host = "127.0.0.1" if host in ("", "0.0.0.0") else host.strip("[]")
    return f"http://{host}:{port}"


def _admin_call(args: argparse.Namespace, method: str, path: str, **query: str) -> object:
    import json
    import urllib.error
    import urllib.parse
    import urllib.request

    url = _admin_base(args) + path
    if query:
        url += "?" + urllib.parse.urlencode(query)
    req = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(req, timeout=args.timeout) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace").strip()
        raise SystemExit(f"mediacache: {method} {path}: {exc.code} {detail}") from None
    except OSError as exc:
        raise SystemExit(
            f"mediacache: cannot reach the proxy's admin API at {url}: {exc}"
        ) from None


def cmd_cache(args: argparse.Namespace) -> int:
    """Manage the running proxy's cache through its admin API."""
    import datetime
    import json

    if args.action == "list":
        rows = _admin_call(args, "GET", "/cache")
        if args.json:
            print(json.dumps(rows, indent=2))
            return 0
        assert isinstance(rows, list)
        print(f"{'size':>10} {'hits':>5} {'last use':19} pin  key")
        for row in rows:
            key = row["key"]
            when = datetime.datetime.fromtimestamp(row["last_use"]).strftime("%Y-%m-%d %H:%M:%S")
            pin = "yes" if row["pinned"] else "-"
            print(
                f"{row['size']:>10} {row['hits']:>5} {when:19} {pin:4} "
                f"{key['format']} {key['url']} [{key['variant']}]"
            )
        return 0
    if args.action == "purge" and args.all:
        result = _admin_call(args, "POST", "/cache/purge", all="1")
    elif not args.url:
        raise SystemExit("mediacache: a URL is required (or --all for purge)")
    elif args.action == "prefetch":
        query = {"url": args.url, "wait": "1" if args.wait else "0"}
        if args.format:
            query["format"] = args.format
        result = _admin_call(args, "POST", "/cache/prefetch", **query)
    else:
        result = _admin_call(args, "POST", f"/cache/{args.action}", url=args.url)
    print(json.dumps(result))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """Popular content and cache savings from access logs."""
    import json

    from mediacache.report import build_report, format_report

    lines: list[str] = []
    for path in args.files:
        try:
            with open(path, encoding="utf-8", errors="replace") as fh:
                lines.extend(fh)
        except OSError as exc:
            print(f"mediacache: {path}: {exc.strerror}", file=sys.stderr)
            return 2
    report = build_report(lines)
    if args.json:
        print(json.dumps(report.as_dict(args.top), indent=2))
    else:
        print(format_report(report, args.top))
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    try:
        config, host = _load(args.file)
    except ConfigError as exc:
        print(f"mediacache: {exc}", file=sys.stderr)
        return 2
    for warning in validate_routes(config, host.registry.names()):
        print(f"warning: {config.source}: {warning}", file=sys.stderr)
    print(f"{config.source}: OK")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mediacache", description=__doc__)
    parser.add_argument("--version", action="version", version=f"mediacache {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="run the proxy")
    p.add_argument("-c", "--config", help="TOML config file (default: built-in defaults)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("plugins", help="list installed formats and plugin load errors")
    p.add_argument("-v", "--verbose", action="store_true", help="show tracebacks of failures")
    p.add_argument("--strict", action="store_true", help="exit 1 when a plugin failed")
    p.set_defaults(func=cmd_plugins)

    p = sub.add_parser("origin", help="run a format's reference origin server")
    p.add_argument("format", help="format name, e.g. realmedia or wmt")
    p.add_argument("--root", required=True, help="directory of clips; DIR/live/ are live")
    p.add_argument("--listen", required=True, help="HOST:PORT")
    p.add_argument("--udp-ports", help="LOW-HIGH server UDP ports (formats with UDP data)")
    p.add_argument("--max-sessions", type=int, help="refuse sessions beyond N")
    p.add_argument("--auth", help="USER:PASS required of clients")
    p.add_argument("--log-level", default="INFO")
    p.set_defaults(func=cmd_origin)

    p = sub.add_parser("cache", help="list, pin, unpin, purge or prefetch cached clips")
    p.add_argument("action", choices=["list", "pin", "unpin", "purge", "prefetch"])
    p.add_argument("url", nargs="?", help="clip URL (a proxy URL of a route, or an origin URL)")
    p.add_argument("--all", action="store_true", help="purge: every object")
    p.add_argument("--wait", action="store_true", help="prefetch: wait until the fill ends")
    p.add_argument("--format", help="prefetch: the format (default: the first served)")
    p.add_argument("--json", action="store_true", help="list: JSON output")
    p.add_argument("-c", "--config", help="config file naming [admin] listen")
    p.add_argument("--admin", help="admin API HOST:PORT (default from the config)")
    p.add_argument("--timeout", type=float, default=600.0)
    p.set_defaults(func=cmd_cache)

    p = sub.add_parser("report", help="popular content and cache savings from access logs")
    p.add_argument("files", nargs="+", help="access log files (squid-like or JSON lines)")
    p.add_argument("--top", type=int, default=10)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("check-config", help="validate a config file without starting")
    p.add_argument("file")
    p.set_defaults(func=cmd_check_config)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
