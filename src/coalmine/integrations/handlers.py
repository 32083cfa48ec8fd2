"""`HandlerLoader`: load ``pkg.mod:handler`` once per (function, version), as Lambda would.

Each (function, version) loads its handler module afresh from the module's
source file under its own name, ``<namespace>.<function>.<version>.<module>``,
so v1 and v2 of one module (or one module registered for two versions) have
separate globals and coexist in one process. What the module imports is
imported the usual way and shared. Shared by the gateway's local runtime and
the local Lambda Invoke endpoint (`coalmine.integrations.lambda_local`).
"""

from __future__ import annotations

import importlib.util
import re
import sys
import threading
from collections.abc import Callable
from types import ModuleType
from typing import Any

__all__ = ["Handler", "HandlerLoader"]

Handler = Callable[[dict[str, Any], Any], object]
_UNSAFE = re.compile(r"[^A-Za-z0-9_]")


class HandlerLoader:
    """Loads handlers on first use, one module namespace per (function, version, ref)."""

    def __init__(self, namespace: str = "coalmine_fn") -> None:
        self.namespace = namespace
        self._handlers: dict[tuple[str, str, str], Handler] = {}
        self._modules: dict[tuple[str, str, str], ModuleType] = {}
        self._lock = threading.Lock()

    def module(self, function: str, version: str, ref: str) -> ModuleType | None:
        """The module a loaded handler lives in (for tests and debugging)."""
        return self._modules.get((function, version, ref))

    def load(self, function: str, version: str, ref: str) -> Handler:
        """The handler of ``ref`` for this function's version, loading it on first use."""
        key = (function, version, ref)
        handler = self._handlers.get(key)
        if handler is not None:
            return handler
        with self._lock:
            handler = self._handlers.get(key)
            if handler is None:
                handler, module = self._load(function, version, ref)
                self._modules[key] = module
                self._handlers[key] = handler
        return handler

    def close(self) -> None:
        """Unregister the loaded modules from ``sys.modules``."""
        with self._lock:
            for module in self._modules.values():
                if sys.modules.get(module.__name__) is module:
                    del sys.modules[module.__name__]
            self._modules.clear()
            self._handlers.clear()

    def _load(self, function: str, version: str, ref: str) -> tuple[Handler, ModuleType]:
        modname, _, attr = ref.partition(":")
        spec = importlib.util.find_spec(modname)
        if spec is None:
            raise ModuleNotFoundError(f"no module named {modname!r}")
        if spec.origin is None or not spec.has_location or not spec.origin.endswith(".py"):
            raise ImportError(f"module {modname!r} is not a Python source file")
        base = f"{self.namespace}.{_UNSAFE.sub('_', function)}.{_UNSAFE.sub('_', version)}"
        name, n = f"{base}.{modname}", 1
        while name in sys.modules:  # another loader, or a name that sanitised alike
            n += 1
            name = f"{base}_{n}.{modname}"
        own = importlib.util.spec_from_file_location(
            name, spec.origin, submodule_search_locations=spec.submodule_search_locations
        )
        if own is None or own.loader is None:
            raise ImportError(f"module {modname!r} cannot be loaded from {spec.origin}")
        module = importlib.util.module_from_spec(own)
        module.__package__ = spec.parent  # relative imports reach the real package
        sys.modules[name] = module
        try:
            own.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
        obj: object = module
        for part in attr.split("."):
            obj = getattr(obj, part)
        if not callable(obj):
            raise TypeError(f"{ref} is not callable")
        return obj, module
