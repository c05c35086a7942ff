"""Price of the native (gas) token in a protocol's quote token, to convert gas costs."""

from __future__ import annotations

import time

from eth_abi import decode as abi_decode

from keeper.config import PriceSourceConfig
from keeper.rpc import RpcClient
from keeper.units import WAD, to_units

LATEST_ROUND_DATA = bytes.fromhex("feaf968c")  # latestRoundData()
DECIMALS = bytes.fromhex("313ce567")  # decimals()


class PriceUnavailable(Exception):
    pass


class NativePrice:
    """`await price()` → quote-token units (1e18) per 1 native token (1e18 wei)."""

    def __init__(self, cfg: PriceSourceConfig, rpc: RpcClient, cache_seconds: float = 12.0):
        self.cfg = cfg
        self.rpc = rpc
        self.cache_seconds = cache_seconds
        self._fixed = to_units(cfg.value, 18) if cfg.source == "fixed" else None
        self._decimals: int | None = None
        self._cached: tuple[float, int] | None = None

    def describe(self) -> str:
        return f"fixed {self.cfg.value}" if self.cfg.source == "fixed" else f"chainlink {self.cfg.feed}"

    async def price(self) -> int:
        if self._fixed is not None:
            return self._fixed
        now = time.monotonic()
        if self._cached and now - self._cached[0] < self.cache_seconds:
            return self._cached[1]
        feed = self.cfg.feed
        if feed is None:  # config validation requires a feed unless source = "fixed"
            raise PriceUnavailable("no pricing.feed configured")
        if self._decimals is None:
            self._decimals = abi_decode(["uint8"], await self.rpc.eth_call(feed, DECIMALS))[0]
        _rid, answer, _started, updated, _ans = abi_decode(
            ["uint80", "int256", "uint256", "uint256", "uint80"], await self.rpc.eth_call(feed, LATEST_ROUND_DATA)
        )
        if answer <= 0:
            raise PriceUnavailable(f"feed {feed} answered {answer}")
        block = await self.rpc.get_block("latest")
        if block is None:
            raise PriceUnavailable("the node returned no latest block")
        age = int(block["timestamp"], 16) - updated
        if age > self.cfg.max_age:
            raise PriceUnavailable(f"feed {feed} is stale ({age}s old > {self.cfg.max_age}s)")
        price = answer * WAD // 10**self._decimals
        self._cached = (now, price)
        return price
