"""The plugins config.yaml may name: the built-ins by name, any other as
``package.module:ClassName``.

A catalog is a read-only mapping from those keys to plugin classes. Iterating it lists
the built-ins (for "did you mean" hints); looking up ``package.module:ClassName`` imports
the module and checks the class. A key of that form that cannot be used raises
`PluginNotUsable` with the reason, which configuration validation reports against the
key's path.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping

from core.engine.hooks import Plugin


class PluginNotUsable(LookupError):
    """A ``package.module:ClassName`` key that names no usable plugin; says why."""


class PluginCatalog(Mapping[str, type[Plugin]]):
    """Built-in plugins by name, plus plugins from outside the tree on demand."""

    def __init__(self, builtins: Mapping[str, type[Plugin]]) -> None:
        self._builtins = dict(builtins)

    def __getitem__(self, key: str) -> type[Plugin]:
        found = self._builtins.get(key)
        if found is not None:
            return found
        if isinstance(key, str) and ":" in key:
            return load_plugin_class(key)
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._builtins)

    def __len__(self) -> int:
        return len(self._builtins)

    def __contains__(self, key: object) -> bool:
        return key in self._builtins or (isinstance(key, str) and ":" in key)


def load_plugin_class(key: str) -> type[Plugin]:
    """The class named by ``package.module:ClassName``, imported and checked."""
    module_name, _, class_name = key.partition(":")
    if not module_name or not class_name or ":" in class_name:
        raise PluginNotUsable("expected package.module:ClassName")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name and (module_name + ".").startswith(error.name + "."):
            raise PluginNotUsable(
                f"cannot import '{module_name}': no module named '{error.name}' (it must be "
                "installed, on PYTHONPATH, or beside the config file)"
            ) from None
        raise PluginNotUsable(f"cannot import '{module_name}': {error}") from None
    except Exception as error:  # the plugin's own module failed to load
        raise PluginNotUsable(
            f"cannot import '{module_name}': {type(error).__name__}: {error}"
        ) from None
    found: object = module
    for part in class_name.split("."):
        found = getattr(found, part, None)
        if found is None:
            raise PluginNotUsable(f"module '{module_name}' has no '{class_name}'")
    if not (isinstance(found, type) and issubclass(found, Plugin)):
        raise PluginNotUsable(
            f"'{class_name}' is not a plugin: subclass Plugin (from plugins import Plugin)"
        )
    return found
