"""Config: defaults for every key, errors that name the file and the key path."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mediacache.config import (
    DEFAULT_ALLOW,
    format_settings,
    load_config,
    parse_config,
    parse_port_range,
    split_host_port,
    validate_routes,
)
from mediacache.errors import ConfigError
from mediacache_quicktime.plugin import QuickTimeConfig


def test_no_file_gives_the_seed_defaults() -> None:
    config = load_config(None)
    assert config.routes == [] and config.access.allow == DEFAULT_ALLOW
    qt = format_settings(config, "quicktime", QuickTimeConfig)
    assert (qt.listen, qt.origin_port, qt.udp_ports) == ("0.0.0.0:1091", 554, "6970-6999")


def test_full_example_decodes() -> None:
    config = parse_config(
        """
        cache_dir = "/var/cache/mediacache"
        [formats.quicktime]
        listen = "0.0.0.0:1091"
        origin_port = 554
        udp_ports = "6970-6999"
        [[routes]]
        format = "quicktime"
        prefix = "/vod/"
        origin = "rtsp://127.0.0.1:8554/"
        [access]
        allow = ["127.0.0.0/8", "10.0.0.0/8"]
        [log]
        access_log = "/tmp/access.log"
        access_format = "json"
        level = "DEBUG"
        [parents]
        quicktime = "rtsp://127.0.0.1:11091"
        """
    )
    assert config.routes[0].origin == "rtsp://127.0.0.1:8554/"
    assert config.log.access_format == "json" and config.parents["quicktime"].endswith("11091")


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("foo = 1", "unknown field `foo`"),
        ("[log]\nlevel = 3", "`$.log.level`"),
        ("[log]\naccess_format = 'xml'", "`$.log.access_format`"),
        ("[access]\nallow = ['not-a-net']", "`$.access`"),
        ("[[routes]]\nformat='q'\nprefix='vod'\norigin='rtsp://x/'", "`$.routes[0]`"),
        ("[cache]\nmemory_limit = -1", "`$.cache.memory_limit`"),
        ("not toml at all [", "not valid TOML"),
    ],
)
def test_errors_name_the_file_and_key(text: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "site.toml")
    assert str(info.value).startswith("site.toml: ")
    assert fragment in str(info.value)


@pytest.mark.parametrize(
    ("table", "fragment"),
    [
        ("origin_port = 'x'", "`$.formats.quicktime.origin_port`"),
        ("origin_port = 70000", "`$.formats.quicktime.origin_port`"),
        ("udp_ports = '9-3'", "`$.formats.quicktime`"),
        ("listen = 'host:port'", "`$.formats.quicktime`"),
        ("lisen = '0.0.0.0:1'", "unknown field `lisen`"),
    ],
)
def test_format_section_errors_name_the_key(table: str, fragment: str) -> None:
    config = parse_config(f"[formats.quicktime]\n{table}\n", "site.toml")
    with pytest.raises(ConfigError) as info:
        format_settings(config, "quicktime", QuickTimeConfig)
    assert str(info.value).startswith("site.toml: ") and fragment in str(info.value)


def test_sections_of_formats_not_installed_are_warnings() -> None:
    config = parse_config(
        "[formats.realmedia]\nlisten=':9231'\n[[routes]]\nformat='wmt'\nprefix='/w/'\norigin='mms://x/'"
    )
    warnings = validate_routes(config, {"quicktime"})
    assert any("formats.realmedia" in w for w in warnings)
    assert any("routes[0]" in w for w in warnings)


def test_host_port_and_ranges() -> None:
    assert split_host_port("[::1]:1091") == ("::1", 1091)
    assert split_host_port(":554") == ("0.0.0.0", 554)
    assert split_host_port("example.org", 554) == ("example.org", 554)
    assert parse_port_range("6970-6999") == (6970, 6999)
    with pytest.raises(ValueError):
        parse_port_range("0-5")


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.toml")


def test_check_config_cli(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text("[formats.quicktime]\nudp_ports = '7000-7009'\n")
    bad = tmp_path / "bad.toml"
    bad.write_text("[formats.quicktime]\norigin_port = 'x'\n")
    cli = [sys.executable, "-m", "mediacache.cli", "check-config"]
    ok = subprocess.run([*cli, str(good)], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and "OK" in ok.stdout
    err = subprocess.run([*cli, str(bad)], capture_output=True, text=True, timeout=60)
    assert err.returncode == 2
    assert str(bad) in err.stderr and "$.formats.quicktime.origin_port" in err.stderr


def test_the_default_cache_dir_is_per_user(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """XDG_CACHE_HOME when set, else ~/.cache; always a ``mediacache`` folder in it."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert load_config(None).cache_dir == str(tmp_path / "xdg" / "mediacache")
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert parse_config("").cache_dir == str(tmp_path / "home" / ".cache" / "mediacache")
    assert parse_config(f"cache_dir = '{tmp_path}/c'").cache_dir == f"{tmp_path}/c"


def test_cache_limits_reach_the_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``[cache] memory_limit`` / ``disk_limit`` size the store the server opens, in the
    default per-user directory."""
    from mediacache.server.app import open_store

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    config = parse_config("[cache]\nmemory_limit = 12345\ndisk_limit = 678910\n")
    store = open_store(config)
    try:
        assert (store.memory_limit, store.disk_limit) == (12345, 678910)
        assert store.directory == tmp_path / "mediacache"
        assert (tmp_path / "mediacache" / "objects").is_dir()
    finally:
        store.close()
    defaults = parse_config("")
    assert (defaults.cache.memory_limit, defaults.cache.disk_limit) == (256 << 20, 10 << 30)
