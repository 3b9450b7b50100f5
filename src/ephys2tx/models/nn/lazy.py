"""Modules imported at their first use.

``torch`` costs about a second and a thousand modules at import; the neural
estimators' modules (:mod:`ephys2tx.models.bilstm`, :mod:`ephys2tx.models.transfer`)
are imported wherever their classes are named (the registry, persistence, the
tests' estimator checks), so they reach torch through :class:`LazyModule` and
import it when a network is built, trained or read.
"""

from __future__ import annotations

import importlib
import types
from collections.abc import Callable, Mapping


class LazyModule(types.ModuleType):
    """Stand-in for the module ``name``: imported at the first attribute read, then forwarded to.

    Dunder names (``__test__``, ``__wrapped__``...: what introspection, such as
    pytest's collection, probes) do not import the module.
    """

    def __init__(self, name: str):
        super().__init__(name)

    def __getattr__(self, attr: str):
        module = self.__dict__.get("_module")
        if module is None:
            if attr.startswith("__") and attr.endswith("__"):
                raise AttributeError(attr)
            module = importlib.import_module(self.__name__)
            self.__dict__["_module"] = module
        return getattr(module, attr)


def reexports(module: str, names: Mapping[str, LazyModule]) -> Callable[[str], object]:
    """A module ``__getattr__`` (PEP 562) serving ``names`` from their lazy modules."""

    def __getattr__(name: str):
        if name in names:
            return getattr(names[name], name)
        raise AttributeError(f"module {module!r} has no attribute {name!r}")

    return __getattr__


#: torch and its functional API, shared by the neural estimators' modules.
torch = LazyModule("torch")
functional = LazyModule("torch.nn.functional")
networks = LazyModule("ephys2tx.models.nn.networks")
training = LazyModule("ephys2tx.models.nn.training")
