"""Load pyroute2's rtnetlink modules without running its package ``__init__``.

``import pyroute2.netlink.rtnl.tcmsg`` first runs ``pyroute2/__init__.py``,
which imports every family pyroute2 speaks (NDB, IPDB, conntrack, nftables,
nl80211, WireGuard, IPVS, 9p, ...), with asyncio, ssl and multiprocessing:
about 190 modules hostchaos never uses. That was a third of an in-process
command's start on the host, and 5 s of every command under the VM tier's
emulated CPU.

:func:`install` puts a finder first on ``sys.meta_path`` that, the first time
anything imports ``pyroute2``, creates the package module from pyroute2's own
spec (so its submodules import as usual) without executing its ``__init__``.
The first time someone asks the package itself for a name that is not a
submodule (``from pyroute2 import IPRoute``, ``pyroute2.__version__``), the real
``__init__`` runs into that same module object and the name is there: code that
uses pyroute2's public API sees no difference.
"""

from __future__ import annotations

import _thread
import importlib
import importlib.machinery
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs a start ~10 ms, and this module is on every path
    from importlib.machinery import ModuleSpec
    from types import ModuleType
    from typing import Any

NAME = "pyroute2"


class _DeferredInit:
    """The package's loader, with its ``__init__`` run on the first missing name."""

    def __init__(self, loader: Any) -> None:
        self._loader = loader

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)  # get_code, get_resource_reader, ...

    def create_module(self, spec: ModuleSpec) -> ModuleType | None:
        return None  # the default module, with __path__ set from the spec

    def exec_module(self, package: ModuleType) -> None:
        loader = self._loader
        initialised = False
        # threads asking at once (the torture lanes making sandboxes, an agent's threads):
        # the others wait for the one running __init__ instead of finding the name missing.
        # Reentrant: __init__'s own imports may ask the package for a name not yet defined.
        lock = _thread.RLock()

        def __getattr__(name: str) -> Any:  # the PEP 562 module hook
            nonlocal initialised
            if not name.startswith("__"):
                submodule = f"{NAME}.{name}"
                if importlib.machinery.PathFinder.find_spec(submodule, package.__path__):
                    return importlib.import_module(submodule)
            with lock:
                if not initialised:
                    initialised = True
                    loader.exec_module(package)
                if name in package.__dict__:
                    return package.__dict__[name]
            raise AttributeError(f"module {NAME!r} has no attribute {name!r}")

        package.__getattr__ = __getattr__  # type: ignore[method-assign]


class _Finder:
    """Finds ``pyroute2`` once, with :class:`_DeferredInit` as its loader."""

    @classmethod
    def find_spec(cls, name: str, path: object = None, target: object = None
                  ) -> ModuleSpec | None:
        if name != NAME:
            return None
        if cls in sys.meta_path:
            sys.meta_path.remove(cls)
        spec = importlib.machinery.PathFinder.find_spec(NAME)
        if spec is None or spec.loader is None or spec.submodule_search_locations is None:
            return spec  # not installed, or not a package: the ordinary import and its error
        spec.loader = _DeferredInit(spec.loader)  # type: ignore[assignment]
        return spec


def install() -> None:
    """Arrange the deferred package, unless pyroute2 is already imported."""
    if NAME not in sys.modules and _Finder not in sys.meta_path:
        sys.meta_path.insert(0, _Finder)


def fully_initialised(package: ModuleType) -> bool:
    """Whether pyroute2's own ``__init__`` has run in ``package`` (for tests)."""
    return "IPRoute" in package.__dict__
