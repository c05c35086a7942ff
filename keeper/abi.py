"""ABI codec over the JSON ABIs in abis/ (the real deployed contracts' interfaces).

`abi("perp/ClearingHouse").fn("liquidate")` → Function with `.selector`, `.encode(*args)`,
`.decode(data)`; `.event("PositionChanged")` → Event with `.topic0` and `.decode(log)`.
Decimal structs (`tuple(uint256)`) decode as 1-tuples; adapters unwrap them explicitly.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_utils import keccak, to_checksum_address

_PKG = Path(__file__).resolve().parent


def abi_dir() -> Path:
    for cand in (_PKG / "_abis", _PKG.parent / "abis"):
        if cand.is_dir():
            return cand
    raise FileNotFoundError("abis/ directory not found next to the keeper package")


def canonical_type(param: dict) -> str:
    t = param["type"]
    if t.startswith("tuple"):
        inner = ",".join(canonical_type(c) for c in param["components"])
        return f"({inner}){t[len('tuple') :]}"
    return t


@dataclass(frozen=True)
class Function:
    name: str
    input_types: tuple[str, ...]
    output_types: tuple[str, ...]

    @property
    def signature(self) -> str:
        return f"{self.name}({','.join(self.input_types)})"

    @property
    def selector(self) -> bytes:
        return keccak(text=self.signature)[:4]

    def encode(self, *args: Any) -> bytes:
        return self.selector + abi_encode(list(self.input_types), list(args))

    def decode(self, data: bytes) -> tuple:
        return abi_decode(list(self.output_types), data)

    def decode_one(self, data: bytes) -> Any:
        return self.decode(data)[0]


@dataclass(frozen=True)
class Event:
    name: str
    inputs: tuple[tuple[str, str, bool], ...]  # (name, type, indexed)

    @property
    def signature(self) -> str:
        return f"{self.name}({','.join(t for _, t, _ in self.inputs)})"

    @property
    def topic0(self) -> str:
        return "0x" + keccak(text=self.signature).hex()

    def decode(self, log: dict) -> dict[str, Any]:
        """A log from eth_getLogs / a receipt → {field: value}; addresses checksummed."""
        topics = log["topics"][1:]
        indexed = [(n, t) for n, t, ix in self.inputs if ix]
        plain = [(n, t) for n, t, ix in self.inputs if not ix]
        out: dict[str, Any] = {}
        for (n, t), topic in zip(indexed, topics, strict=True):
            out[n] = abi_decode([t], bytes.fromhex(topic[2:]))[0]
        data = log["data"]
        values = abi_decode([t for _, t in plain], bytes.fromhex(data[2:] if isinstance(data, str) else data.hex()))
        for (n, _), v in zip(plain, values, strict=True):
            out[n] = v
        for n, t, _ in self.inputs:
            if t == "address":
                out[n] = to_checksum_address(out[n])
        return out


class Abi:
    def __init__(self, name: str, entries: list[dict]):
        self.name = name
        self.entries = entries
        self._fns: dict[tuple[str, int], Function] = {}
        self._events: dict[str, Event] = {}
        for e in entries:
            if e.get("type") == "function":
                f = Function(
                    e["name"],
                    tuple(canonical_type(p) for p in e.get("inputs", [])),
                    tuple(canonical_type(p) for p in e.get("outputs", [])),
                )
                self._fns[(f.name, len(f.input_types))] = f
            elif e.get("type") == "event":
                ev = Event(e["name"], tuple((p["name"], canonical_type(p), bool(p.get("indexed"))) for p in e["inputs"]))
                self._events[ev.name] = ev

    def fn(self, name: str, arity: int | None = None) -> Function:
        if arity is not None:
            return self._fns[(name, arity)]
        matches = [f for (n, _), f in self._fns.items() if n == name]
        if len(matches) != 1:
            raise KeyError(f"{self.name}: {len(matches)} functions named {name!r}; pass arity")
        return matches[0]

    def event(self, name: str) -> Event:
        return self._events[name]

    def functions(self) -> list[Function]:
        return list(self._fns.values())

    def events(self) -> list[Event]:
        return list(self._events.values())


@cache
def abi(name: str) -> Abi:
    """Load abis/<name>.json, e.g. abi("perp/ClearingHouse")."""
    path = abi_dir() / f"{name}.json"
    data = json.loads(path.read_text())
    return Abi(name, data["abi"] if isinstance(data, dict) else data)  # a compiled artifact: {"abi", "bytecode", …}


def flat(value: Any) -> list:
    """Flatten nested tuples (Decimal structs, returned structs) into a flat list of scalars."""
    if isinstance(value, tuple | list):
        out: list = []
        for v in value:
            out.extend(flat(v))
        return out
    return [value]


def flat_decoder(fn: Function):
    """Decoder for CallBatcher: answer bytes → flat list of the function's outputs."""
    return lambda data: flat(fn.decode(data))
