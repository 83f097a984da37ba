"""The plugin host: stevedore finds and loads format plugins, pluggy registers and calls them.

stevedore alone reads the entry-point group ``mediacache.formats`` (pluggy's own
``load_setuptools_entrypoints`` is never used, so there is one discovery path). Each entry point
names a module or object holding hookimpls; pluggy registers it and the core calls it through
the hookspecs in :mod:`mediacache.hookspecs`. A plugin that fails to import, or whose
``mediacache_register_formats`` raises, is recorded in :attr:`PluginHost.failures` with its name
and error, and every other plugin keeps working.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass, field
from typing import Any

import pluggy
from stevedore import ExtensionManager

from mediacache import hookspecs
from mediacache.formats import FormatRegistry

ENTRY_POINT_GROUP = "mediacache.formats"


@dataclass(frozen=True, slots=True)
class PluginFailure:
    name: str
    target: str
    error: str
    detail: str = ""


@dataclass
class PluginHost:
    """Loaded plugins, the pluggy manager that calls them, and the formats they registered."""

    pm: pluggy.PluginManager = field(default_factory=lambda: new_plugin_manager())
    registry: FormatRegistry = field(default_factory=FormatRegistry)
    failures: list[PluginFailure] = field(default_factory=list)
    loaded: dict[str, str] = field(default_factory=dict)
    """plugin name -> distribution version (or "builtin")."""

    @property
    def hook(self) -> Any:
        return self.pm.hook

    def register(self, name: str, plugin: object, version: str = "builtin") -> bool:
        """Register one plugin object and let it add its formats; False (and a failure) if not."""
        try:
            self.pm.register(plugin, name=name)
        except Exception as exc:  # pluggy validates hookimpls against the specs
            self._fail(name, repr(plugin), exc)
            return False
        try:
            self.pm.check_pending()  # a hookimpl naming no hookspec: a typo, refuse it
        except Exception as exc:
            self.pm.unregister(name=name)
            self._fail(name, repr(plugin), exc)
            return False
        impls = [
            impl
            for impl in self.pm.hook.mediacache_register_formats.get_hookimpls()
            if impl.plugin_name == name
        ]
        self.registry.current_plugin = name
        try:
            for impl in impls:
                impl.function(registry=self.registry)
        except Exception as exc:
            self.registry.remove_owned_by(name)
            self.pm.unregister(name=name)
            self._fail(name, repr(plugin), exc)
            return False
        finally:
            self.registry.current_plugin = "<unknown>"
        self.loaded[name] = version
        return True

    def load_entry_points(self, manager: ExtensionManager | None = None) -> None:
        """Load every installed format plugin (or those of a test ``manager``)."""
        if manager is None:
            manager = ExtensionManager(
                namespace=ENTRY_POINT_GROUP,
                invoke_on_load=False,
                on_load_failure_callback=self._on_load_failure,
            )
        for ext in manager:
            version = _distribution_version(ext)
            self.register(ext.name, ext.plugin, version)

    def _on_load_failure(self, _manager: object, entry_point: Any, exc: BaseException) -> None:
        self._fail(entry_point.name, getattr(entry_point, "value", str(entry_point)), exc)

    def _fail(self, name: str, target: str, exc: BaseException) -> None:
        detail = "".join(traceback.format_exception(exc)).strip()
        self.failures.append(PluginFailure(name, target, f"{type(exc).__name__}: {exc}", detail))


def new_plugin_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    return pm


def _distribution_version(ext: Any) -> str:
    dist = getattr(ext.entry_point, "dist", None)
    return getattr(dist, "version", None) or "unknown"


def load_plugins(manager: ExtensionManager | None = None) -> PluginHost:
    """The host with the built-in plugins and every installed format plugin loaded."""
    from mediacache import logs, metrics

    host = PluginHost()
    host.register("builtin-accesslog", logs.AccessLogPlugin())
    host.register("builtin-metrics", metrics.SessionMetrics())
    host.load_entry_points(manager)
    return host
