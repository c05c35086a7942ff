"""Presets for real deployments: `[[protocols]] preset = "NAME"` fills a protocol table (addresses, start
block), the chain id it belongs to and a native-price source; every field stays overridable.

Schema (keeper.commands.fork and config validation rely on it):
    Preset.name, .chain_id, .description
    Preset.protocol: a [[protocols]] table without `name` (kind, addresses, start_block)
    Preset.native_price: a price-source table ({"source": "chainlink", "feed": ...} or {"source": "fixed", ...})
    Preset.stablecoin: the token a keeper may need to hold (crvUSD / the borrowed token / USDC), or None
    Preset.gas: [gas] defaults for the chain (e.g. tip 0 on a first-come-first-served L2), applied by
        apply_gas_defaults under every key the file (or the environment) sets itself
Addresses and facts: docs/PROTOCOLS.md (§A.7 xDai, §B.7 Ethereum).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
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
    gas: dict[str, Any] = field(default_factory=dict)


# Sources (a start block at or before the contract's deployment only costs indexing time):
# - crvUSD ControllerFactory, crvUSD: docs/PROTOCOLS.md §B.7; factory created at block 17,257,955.
# - LlamaLend OneWayLendingFactory (Ethereum): docs/PROTOCOLS.md §B.7; Curve's deployment list
#   (docs.curve.finance, "Curve Lending: Deployment Addresses"); first block 19,422,660 (2024-03-14).
# - LlamaLend OneWayLendingFactory (Arbitrum): Curve's deployment list (same page); its deployment
#   script names STABLECOIN() = crvUSD-arbitrum 0x498B…C1e5; first block 193,652,535 (2024-03-24).
# - Perp v1 xDai ClearingHouse, USDC: docs/PROTOCOLS.md §A.7 (Perp's metadata/production.json);
#   Perp's own position subgraph indexes the ClearingHouse from block 13,507,324.
# - Chainlink ETH/USD: Ethereum 0x5f4e…8419 (heartbeat 1 h, hence max_age 4,500 s), Arbitrum One
#   0x639F…a612 (updated on a 0.05 % deviation; max_age one day plus margin: it only prices gas).
# - Arbitrum One orders transactions first come, first served (its sequencer ignores the priority fee
#   and there is no public mempool to outbid in): tip 0, no outbidding.
FCFS_L2_GAS: dict[str, Any] = {"priority_fee_gwei": "0", "tip_policy": "fixed", "outbid": False}
ETH_USD_ETHEREUM = "0x5f4eC3Df9cbd43714FE2740f5E3616155c5b8419"
ETH_USD_ARBITRUM = "0x639Fe6ab55C921f74e7fac1ee960C0B6293ba612"
CRVUSD_ETHEREUM = "0xf939E0A03FB07F59A73314E73794Be0E57ac1b4E"
CRVUSD_ARBITRUM = "0x498Bf2B1e120FeD3ad3D42EA2165E9b73f99C1e5"

PRESETS: dict[str, Preset] = {
    "crvusd-ethereum": Preset(
        name="crvusd-ethereum",
        chain_id=1,
        description="Curve crvUSD mint markets on Ethereum (ControllerFactory); gas priced by Chainlink ETH/USD",
        protocol={"kind": "llamma", "factory": "0xC9332fdCB1C491Dcc683bAe86Fe3cb70360738BC", "start_block": 17_257_955},
        native_price={"source": "chainlink", "feed": ETH_USD_ETHEREUM, "max_age": 4500},
        stablecoin=CRVUSD_ETHEREUM,
    ),
    "llamalend-ethereum": Preset(
        name="llamalend-ethereum",
        chain_id=1,
        description="Curve LlamaLend one-way lending markets on Ethereum (OneWayLendingFactory); gas priced by Chainlink "
        "ETH/USD, right for the crvUSD-borrowing markets (a market lending another token needs its own native_price)",
        protocol={"kind": "llamma", "factory": "0xeA6876DDE9e3467564acBeE1Ed5bac88783205E0", "start_block": 19_422_660},
        native_price={"source": "chainlink", "feed": ETH_USD_ETHEREUM, "max_age": 4500},
        stablecoin=CRVUSD_ETHEREUM,
    ),
    "llamalend-arbitrum": Preset(
        name="llamalend-arbitrum",
        chain_id=42161,
        description="Curve LlamaLend one-way lending markets on Arbitrum One (OneWayLendingFactory); gas priced by "
        "Chainlink ETH/USD on Arbitrum, right for the crvUSD-borrowing markets",
        protocol={"kind": "llamma", "factory": "0xcaEC110C784c9DF37240a8Ce096D352A75922DeA", "start_block": 193_652_535},
        native_price={"source": "chainlink", "feed": ETH_USD_ARBITRUM, "max_age": 90_000},
        stablecoin=CRVUSD_ARBITRUM,
        gas=FCFS_L2_GAS,
    ),
    "perp-v1-xdai": Preset(
        name="perp-v1-xdai",
        chain_id=100,
        description="Perpetual Protocol v1 on xDai (ClearingHouse, USDC quote); the gas token xDAI priced at 1 USDC",
        protocol={"kind": "perp_v1", "clearing_house": "0x5d9593586b4B5edBd23E7Eba8d88FD8F09D83EBd", "start_block": 13_507_324},
        native_price={"source": "fixed", "value": "1"},
        stablecoin="0xDDAfbb505ad214D7b80b1f830fcCc89B60fb7A83",
    ),
}


def preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise KeyError(f"unknown preset {name!r} (known: {', '.join(sorted(PRESETS))})") from None


def protocol_table(p: Preset, table: Mapping[str, Any], *, has_pricing: bool) -> dict[str, Any]:
    """The [[protocols]] table `table` (which names `preset = p.name`) with the preset filled in: the preset's
    protocol table is the base and every key of `table` overrides it; `name` defaults to the preset's name;
    `native_price` comes from the preset unless `table` sets one or the file has a [pricing] section."""
    out: dict[str, Any] = copy.deepcopy(p.protocol)
    out["name"] = p.name
    if not has_pricing:
        out["native_price"] = copy.deepcopy(p.native_price)
    out.update(copy.deepcopy(dict(table)))
    return out


def apply_gas_defaults(data: dict[str, Any], used: list[Preset]) -> None:
    """Fill the config dict's [gas] table with the presets' chain defaults (Preset.gas) under every key it
    does not set itself (file and environment win). Presets of one file share one chain (checked
    elsewhere), so the first preset that has gas defaults gives them."""
    defaults = next((p.gas for p in used if p.gas), None)
    if not defaults:
        return
    gas = data.get("gas")
    if gas is None:
        gas = data["gas"] = {}
    if isinstance(gas, dict):  # anything else is left for validation to name
        for key, value in defaults.items():
            gas.setdefault(key, copy.deepcopy(value))
