"""The core reaches a format's code only through hooks called with the format's name.

Each installed plugin answers for its own format and returns None for the others, so
``firstresult`` hooks pick the right plugin whatever the registration order.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from mediacache.config import Config
from mediacache.formats import OriginOptions
from mediacache.plugins import PluginHost, load_plugins
from mediacache.rtsp.proxy import RtspProxyLayer
from mediacache.sansio.connection import Connection
from mediacache.sansio.layer import SessionContext
from mediacache.testing.playbook import RecordingDataPlane

FORMATS = ("quicktime", "realmedia", "wmt")


@pytest.fixture(scope="module")
def host() -> PluginHost:
    host = load_plugins()
    missing = set(FORMATS) - host.registry.names()
    if missing:
        pytest.skip(f"format plugins not installed: {sorted(missing)}")
    return host


def _ctx(host: PluginHost, name: str) -> SessionContext:
    spec = host.registry[name]
    return SessionContext(
        format_name=name,
        settings=spec.defaults,
        client=Connection("client", ("127.0.0.1", 40000), local=("127.0.0.1", 1091)),
        config=Config(),
        dataplane=RecordingDataPlane(),
        listen_port=1091,
        hook=host.hook,
    )


@pytest.mark.parametrize("name", FORMATS)
def test_each_format_gets_its_own_plugins_layer(host: PluginHost, name: str) -> None:
    layer = host.hook.mediacache_make_layer(format_name=name, ctx=_ctx(host, name))
    if name == "wmt":
        assert type(layer).__module__.startswith("mediacache_wmt")
    else:  # the core's RTSP layer with the format's own dialect
        assert isinstance(layer, RtspProxyLayer)
        expected = "mediacache_realmedia" if name == "realmedia" else "mediacache.rtsp"
        assert type(layer.dialect).__module__.startswith(expected)


def test_an_unknown_format_gets_no_layer(host: PluginHost) -> None:
    ctx = _ctx(host, "quicktime")
    assert host.hook.mediacache_make_layer(format_name="nosuch", ctx=ctx) is None


def test_reference_origins_come_from_the_formats_that_declare_one(
    host: PluginHost, tmp_path: Path
) -> None:
    options = OriginOptions(root=tmp_path, listen="127.0.0.1:0")
    for name in FORMATS:
        factory = host.hook.mediacache_reference_origin(format_name=name, options=options)
        assert (factory is not None) == host.registry[name].has_reference_origin, name
        if factory is not None:
            layer: Any = factory(_ctx(host, name))
            assert type(layer).__module__.startswith(f"mediacache_{name}")


def test_prefetch_comes_from_each_format(host: PluginHost) -> None:
    for name in FORMATS:
        fill = host.hook.mediacache_prefetch(
            format_name=name, url="rtsp://h/a", proxy_host="127.0.0.1", proxy_port=1
        )
        assert asyncio.iscoroutine(fill), name
        fill.close()  # never started: nothing to clean up
    assert (
        host.hook.mediacache_prefetch(format_name="x", url="u", proxy_host="h", proxy_port=1)
        is None
    )
