"""Protocol adapters. A module here that defines `ADAPTER = SomeAdapter` is a protocol kind.

Adding a protocol is one new module (plus its tests): it is discovered by its `ADAPTER.kind`.
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache

from keeper.adapters.base import Adapter
from keeper.config import set_protocol_kinds_loader


@cache
def registry() -> dict[str, type[Adapter]]:
    kinds: dict[str, type[Adapter]] = {}
    for mod in pkgutil.iter_modules(__path__):
        if mod.name.startswith("_") or mod.name == "base":
            continue
        module = importlib.import_module(f"{__name__}.{mod.name}")
        cls = getattr(module, "ADAPTER", None)
        if cls is not None:
            kinds[cls.kind] = cls
    return kinds


def adapter_class(kind: str) -> type[Adapter]:
    kinds = registry()
    if kind not in kinds:
        raise KeyError(f"unknown protocol kind {kind!r} (known: {', '.join(sorted(kinds)) or 'none'})")
    return kinds[kind]


# keeper.config never imports this package: it asks this loader for the protocol kinds it does not
# know yet (importing each adapter module registers its config model's `kind`).
set_protocol_kinds_loader(registry)
