"""Presets for real deployments: `[[protocols]] preset = "NAME"` fills a protocol table (addresses, start
block), the chain id it belongs to and a native-price source; every field stays overridable.

Schema (keeper.commands.fork and config validation rely on it):
    Preset.name, .chain_id, .description
    Preset.protocol: a [[protocols]] table without `name` (kind, addresses, start_block)
    Preset.native_price: a price-source table ({"source": "chainlink", "feed": ...} or {"source": "fixed", ...})
    Preset.stablecoin: the token a keeper may need to hold (crvUSD / the borrowed token / USDC), or None
Addresses and facts: docs/PROTOCOLS.md (§A.7 xDai, §B.7 Ethereum).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Preset:
    name: str
    chain_id: int
    description: str
    protocol: dict[str, Any] = field(default_factory=dict)
    native_price: dict[str, Any] = field(default_factory=dict)
    stablecoin: str | None = None


PRESETS: dict[str, Preset] = {
    "crvusd-ethereum": Preset(
        name="crvusd-ethereum",
        chain_id=1,
        description="Curve crvUSD mint markets on Ethereum (ControllerFactory)",
        protocol={"kind": "llamma", "factory": "0xC9332fdCB1C491Dcc683bAe86Fe3cb70360738BC", "start_block": 17_257_955},
        native_price={"source": "chainlink", "feed": "0x5f4eC3Df9cbd43714FE2740f5E3616155c5b8419"},
        stablecoin="0xf939E0A03FB07F59A73314E73794Be0E57ac1b4E",
    ),
    "perp-v1-xdai": Preset(
        name="perp-v1-xdai",
        chain_id=100,
        description="Perpetual Protocol v1 on xDai (ClearingHouse, USDC quote)",
        protocol={"kind": "perp_v1", "clearing_house": "0x5d9593586b4B5edBd23E7Eba8d88FD8F09D83EBd", "start_block": 0},
        native_price={"source": "fixed", "value": "1"},
        stablecoin="0xDDAfbb505ad214D7b80b1f830fcCc89B60fb7A83",
    ),
}


def preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise KeyError(f"unknown preset {name!r} (known: {', '.join(sorted(PRESETS))})") from None
