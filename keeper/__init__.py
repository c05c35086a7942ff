"""keeper: a liquidation keeper for perp DEXes (Perp v1 / Palmswap v1) and LLAMMA lending markets."""

__version__ = "0.1.0"
