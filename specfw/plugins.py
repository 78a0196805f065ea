"""The plugin host: one pluggy manager, one registry of plugin classes.

Built-in plugins (the ``specfw_plugins`` package, kept in ``plugins/`` in the
source tree) are registered exactly like third-party ones, which come from the
``specfw`` entry-point group. A third-party plugin that fails to import or
registers something invalid is named in one warning line on stderr; the others
still load. ``SPECFW_PLUGINS`` (comma-separated entry-point names) restricts
which third-party plugins load; set it to an empty string to load none.
"""

from __future__ import annotations

import importlib
import importlib.metadata as metadata
import inspect
import os
import sys
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterable

import pluggy

from specfw import hookspecs
from specfw.errors import PluginError
from specfw.protocols import PLUGIN_KINDS

ENTRY_POINT_GROUP = "specfw"
BUILTIN_MODULES = (
    "specfw_plugins.drafters",
    "specfw_plugins.lookup",
    "specfw_plugins.translators",
    "specfw_plugins.tli",
    "specfw_plugins.verifiers",
    "specfw_plugins.slrs",
    "specfw_plugins.cache_syncs",
    "specfw_plugins.k_policies",
)
HOOK_FOR_KIND = {
    "drafter": "register_drafters",
    "translator": "register_translators",
    "verifier": "register_verifiers",
    "cache_sync": "register_cache_syncs",
    "k_policy": "register_k_policies",
}


@dataclass(frozen=True)
class PluginInfo:
    """One registered plugin class and where it came from."""

    kind: str
    name: str
    cls: type
    module: str
    distribution: str
    version: str

    def as_dict(self) -> dict[str, str]:
        return {
            "kind": self.kind,
            "name": self.name,
            "module": self.module,
            "distribution": self.distribution,
            "version": self.version,
        }


def _protocol_methods(protocol: type) -> list[str]:
    return [
        n
        for n, v in vars(protocol).items()
        if not n.startswith("_") and callable(v)
    ]


def _check_class(kind: str, cls: object, origin: str) -> str:
    """Validate a registered class against its kind's protocol; return its name."""
    if not inspect.isclass(cls):
        raise PluginError(f"{origin} registered {cls!r} as a {kind}, but it is not a class")
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise PluginError(f"{origin}: {kind} class {cls.__qualname__} has no string attribute 'name'")
    missing = [m for m in _protocol_methods(PLUGIN_KINDS[kind]) if not callable(getattr(cls, m, None))]
    if missing:
        raise PluginError(f"{origin}: {kind} '{name}' ({cls.__qualname__}) lacks method(s) {', '.join(missing)}")
    return name


class Registry:
    """Plugin classes by kind and name, built once from a pluggy manager."""

    def __init__(self) -> None:
        self.manager = pluggy.PluginManager("specfw")
        self.manager.add_hookspecs(hookspecs)
        self.plugins: dict[str, dict[str, PluginInfo]] = {kind: {} for kind in PLUGIN_KINDS}
        self.warnings: list[str] = []
        self._origin: dict[str, tuple[str, str]] = {}  # plugin module -> (distribution, version)

    # -- discovery ---------------------------------------------------------

    def load_builtins(self) -> None:
        version = _version("specfw")
        for module_name in BUILTIN_MODULES:
            module = importlib.import_module(module_name)
            self._origin[module.__name__] = ("specfw", version)
            self.manager.register(module, name=module_name)

    def load_entry_points(self, only: Iterable[str] | None = None) -> None:
        allowed = set(only) if only is not None else None
        for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
            if allowed is not None and ep.name not in allowed:
                continue
            dist = ep.dist.name if ep.dist else "?"
            version = ep.dist.version if ep.dist else "?"
            try:
                plugin = ep.load()
                self.manager.register(plugin, name=f"{dist}:{ep.name}")
                self.manager.check_pending()
            except Exception as exc:  # a broken plugin must not take the others down
                registered = self.manager.get_plugin(f"{dist}:{ep.name}")
                if registered is not None:
                    self.manager.unregister(registered)
                self._warn(f"plugin '{ep.name}' from {dist} {version} failed to load: {_one_line(exc)}")
                continue
            self._origin[getattr(plugin, "__name__", ep.value)] = (dist, version)

    def collect(self) -> None:
        """Call every register_* hook implementation and validate what it registers.

        Implementations are called one by one (pluggy's hookimpl list) so that
        each class is attributed to its plugin and a failing third-party hook
        is skipped alone.
        """
        self.manager.check_pending()
        for kind, hook_name in HOOK_FOR_KIND.items():
            for impl in getattr(self.manager.hook, hook_name).get_hookimpls():
                module = getattr(impl.plugin, "__name__", impl.plugin_name)
                dist, version = self._origin.get(module, ("?", "?"))
                origin = f"plugin {impl.plugin_name} ({dist} {version})"
                found: list[type] = []
                try:
                    impl.function(register=found.append)
                    infos = [
                        PluginInfo(kind, _check_class(kind, cls, origin), cls, cls.__module__, dist, version)
                        for cls in found
                    ]
                except Exception as exc:
                    if dist == "specfw":
                        raise  # a broken built-in is our bug: fail loudly
                    self._warn(f"{origin} failed in {hook_name}: {_one_line(exc)}")
                    continue
                for info in infos:
                    if info.name in self.plugins[kind]:
                        prev = self.plugins[kind][info.name]
                        self._warn(
                            f"{kind} '{info.name}' from {dist} ignored: already provided by {prev.distribution}"
                        )
                        continue
                    self.plugins[kind][info.name] = info

    def _warn(self, line: str) -> None:
        self.warnings.append(line)
        print(f"specfw: warning: {line}", file=sys.stderr)

    # -- lookup ------------------------------------------------------------

    def get(self, kind: str, name: str) -> PluginInfo:
        known = self.plugins[kind]
        if kind == "drafter" and "+" in name and name not in known:
            return self._combined_drafter(name)
        if name not in known:
            label = kind.replace("_", "-")
            raise PluginError(f"unknown {label} '{name}'; known: {', '.join(sorted(known)) or 'none'}")
        return known[name]

    def _combined_drafter(self, name: str) -> PluginInfo:
        """``FIRST+SECOND``: two registered drafters as one (see :mod:`specfw_plugins.combined`)."""
        from specfw_plugins.combined import combined_drafter_class

        parts = name.split("+")
        if len(parts) != 2 or not all(parts):
            raise PluginError(f"drafter '{name}': a combination names two drafters, FIRST+SECOND (e.g. lookup+mlx)")
        infos = []
        for part in parts:
            if part not in self.plugins["drafter"]:
                known = ", ".join(sorted(self.plugins["drafter"]))
                raise PluginError(f"unknown drafter '{part}' in '{name}'; known: {known}")
            infos.append(self.plugins["drafter"][part])
        cls = combined_drafter_class(infos[0].cls, infos[1].cls)
        return PluginInfo("drafter", name, cls, cls.__module__, infos[1].distribution, infos[1].version)

    def names(self, kind: str) -> list[str]:
        return sorted(self.plugins[kind])

    def all(self) -> list[PluginInfo]:
        return [info for kind in PLUGIN_KINDS for _, info in sorted(self.plugins[kind].items())]


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "0+unknown"


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def build_registry(load_entry_points: bool = True) -> Registry:
    """A fresh registry: built-ins, then entry points (honouring SPECFW_PLUGINS)."""
    registry = Registry()
    registry.load_builtins()
    if load_entry_points:
        only = os.environ.get("SPECFW_PLUGINS")
        registry.load_entry_points(None if only is None else [n for n in only.split(",") if n.strip()])
    registry.collect()
    return registry


@lru_cache(maxsize=1)
def get_registry() -> Registry:
    """The process-wide registry, built on first use."""
    return build_registry()
