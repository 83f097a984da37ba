"""The plugin host: stevedore discovery, pluggy registration, load failures reported."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from loguru import logger
from stevedore import ExtensionManager
from stevedore.extension import Extension

from mediacache.formats import FormatSpec
from mediacache.hookspecs import hookimpl
from mediacache.plugins import load_plugins


def _fake_entry_point(tmp_path: Path, name: str, target: str, module_source: str | None) -> Path:
    """Install a real entry point (a .dist-info on sys.path), as pip would."""
    site = tmp_path / "site"
    dist = site / f"mc_test_{name}-0.0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: mc-test-{name}\nVersion: 0.0.1\n")
    (dist / "entry_points.txt").write_text(f"[mediacache.formats]\n{name} = {target}\n")
    if module_source is not None:
        (site / f"{target.split(':')[0]}.py").write_text(module_source)
    return site


def _plugins_cli(site: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(site))
    return subprocess.run(
        [sys.executable, "-m", "mediacache.cli", "plugins"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def test_plugins_lists_quicktime_with_ports() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "mediacache.cli", "plugins"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0
    assert "quicktime 0.1.0" in out.stdout
    assert "listen: 0.0.0.0:1091" in out.stdout and "udp ports: 6970-6999" in out.stdout
    assert "RTSP/1.0" in out.stdout


def test_an_entry_point_that_fails_to_import_is_reported(tmp_path: Path) -> None:
    site = _fake_entry_point(
        tmp_path, "broken", "mc_broken_mod:plugin", "raise ImportError('boom')\n"
    )
    out = _plugins_cli(site)
    assert out.returncode == 0
    assert "FAILED broken" in out.stdout and "boom" in out.stdout
    assert "quicktime 0.1.0" in out.stdout  # the others keep working


def test_an_entry_point_whose_registration_raises_is_reported(tmp_path: Path) -> None:
    source = (
        "from mediacache.hookspecs import hookimpl\n"
        "@hookimpl\n"
        "def mediacache_register_formats(registry):\n"
        "    raise RuntimeError('cannot register')\n"
    )
    site = _fake_entry_point(tmp_path, "badreg", "mc_badreg_mod", source)
    out = _plugins_cli(site)
    assert "FAILED badreg" in out.stdout and "cannot register" in out.stdout
    assert "quicktime 0.1.0" in out.stdout


def test_core_alone_says_no_format_is_installed(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """With no plugin installed, ``mediacache plugins`` says so, and ``mediacache serve``
    warns (the CLI and the server each) and keeps running rather than exiting."""
    from mediacache import cli
    from mediacache.server.app import ProxyServer, serve_forever

    host = load_plugins(ExtensionManager.make_test_instance([]))
    assert len(host.registry) == 0 and host.failures == []
    monkeypatch.setattr(cli, "load_plugins", lambda: host)
    assert cli.main(["plugins"]) == 0
    assert capsys.readouterr().out == "no format is installed\n"

    still_running: list[bool] = []

    def run_briefly(server: ProxyServer) -> int:  # the CLI's loop, without its signals
        async def main() -> None:
            task = asyncio.create_task(serve_forever(server))
            await asyncio.sleep(0.5)
            still_running.append(not task.done())
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

        asyncio.run(main())
        return 0

    monkeypatch.setattr(cli, "_run_until_signal", run_briefly)
    monkeypatch.setattr(cli, "setup_logging", lambda config: None)  # keep our sink
    config = tmp_path / "mc.toml"
    config.write_text(f"cache_dir = '{tmp_path / 'cache'}'\n[admin]\nlisten = '127.0.0.1:0'\n")
    messages: list[str] = []
    sink = logger.add(lambda m: messages.append(m.record["message"]), level="WARNING")
    try:
        assert cli.main(["serve", "-c", str(config)]) == 0
    finally:
        logger.remove(sink)
    assert still_running == [True]
    assert any("no format plugin is installed" in m for m in messages)  # cli.cmd_serve
    assert any("no format is installed" in m for m in messages)  # ProxyServer.start


def test_a_format_registered_twice_fails_the_second_plugin() -> None:
    import mediacache_quicktime.plugin as qt

    class Dup:
        @hookimpl
        def mediacache_register_formats(self, registry):  # type: ignore[no-untyped-def]
            registry.add(qt.QUICKTIME)

    exts = [Extension("quicktime", None, qt.PLUGIN, None), Extension("dup", None, Dup(), None)]
    host = load_plugins(ExtensionManager.make_test_instance(exts))  # type: ignore[arg-type]
    assert "quicktime" in host.registry
    assert host.registry.owners["quicktime"] == "quicktime"
    assert [f.name for f in host.failures] == ["dup"]


def test_a_plugin_with_an_unknown_hook_is_refused() -> None:
    class Typo:
        @hookimpl
        def mediacache_register_fromats(self, registry):  # type: ignore[no-untyped-def]
            pass

    host = load_plugins(
        ExtensionManager.make_test_instance([Extension("typo", None, Typo(), None)])
    )  # type: ignore[arg-type]
    assert [f.name for f in host.failures] == ["typo"]


def test_formatspec_defaults() -> None:
    import mediacache_quicktime.plugin as qt

    spec: FormatSpec = qt.QUICKTIME
    assert spec.defaults.udp_ports == "6970-6999"
