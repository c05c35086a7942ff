# pragma version ~=0.4.3
"""
@title Reference OP-stack GasPriceOracle (predeploy 0x420000000000000000000000000000000000000F)
@notice The L1 data fee views the keeper reads on an OP-stack chain, with the same selectors and
        formulas as the real predeploy, parameters settable by the owner:
        - Ecotone (`isFjord` false): getL1Fee(data) = calldataGas(data) ×
          (16 · l1BaseFee · baseFeeScalar + blobBaseFee · blobBaseFeeScalar) / (16 · 10^6), where
          calldataGas = 4 per zero byte + 16 per non-zero byte + 68 · 16 (the signature the unsigned
          transaction `data` does not carry); getL1FeeUpperBound reverts (it is a Fjord method).
        - Fjord (`isFjord` true): fee(size) = max(costIntercept + costFastlzCoef · size, 100 · 10^6) ×
          (16 · l1BaseFee · baseFeeScalar + blobBaseFee · blobBaseFeeScalar) / 10^12.
          getL1FeeUpperBound(n) = fee(t + t / 255 + 16) with t = n + 68 (the real contract's bound).
          getL1Fee(data) = fee(len(data) + 68): THIS REFERENCE models the FastLZ-compressed size by the
          uncompressed size (no compression), so getL1Fee ≤ getL1FeeUpperBound as on the real chain.
        Storage defaults (all zero) are valid, so the runtime code can be placed at the predeploy address
        with anvil_setCode; `initialize()` then claims ownership (the constructor does not run there).
"""

DECIMALS: constant(uint256) = 6
COST_INTERCEPT: constant(int256) = -42_585_600
COST_FASTLZ_COEF: constant(uint256) = 836_500
MIN_TRANSACTION_SIZE: constant(uint256) = 100
MAX_DATA: constant(uint256) = 65536

owner: public(address)
l1BaseFee: public(uint256)
blobBaseFee: public(uint256)
baseFeeScalar: public(uint32)
blobBaseFeeScalar: public(uint32)
isFjord: public(bool)


@deploy
def __init__():
    self.owner = msg.sender


@external
def initialize():
    """Claim ownership where the constructor did not run (runtime code placed with anvil_setCode)."""
    assert self.owner == empty(address), "already initialized"
    self.owner = msg.sender


@external
def set_params(_l1_base_fee: uint256, _blob_base_fee: uint256, _base_fee_scalar: uint32, _blob_base_fee_scalar: uint32):
    assert msg.sender == self.owner, "only owner"
    self.l1BaseFee = _l1_base_fee
    self.blobBaseFee = _blob_base_fee
    self.baseFeeScalar = _base_fee_scalar
    self.blobBaseFeeScalar = _blob_base_fee_scalar


@external
def set_fjord(_on: bool):
    assert msg.sender == self.owner, "only owner"
    self.isFjord = _on


@external
@pure
def decimals() -> uint256:
    return DECIMALS


@internal
@view
def _scaled_fee() -> uint256:
    return convert(self.baseFeeScalar, uint256) * 16 * self.l1BaseFee + convert(self.blobBaseFeeScalar, uint256) * self.blobBaseFee


@internal
@view
def _fjord_cost(_fastlz_size: uint256) -> uint256:
    estimated: int256 = COST_INTERCEPT + convert(COST_FASTLZ_COEF * _fastlz_size, int256)
    lowest: int256 = convert(MIN_TRANSACTION_SIZE * 10**DECIMALS, int256)
    if estimated < lowest:
        estimated = lowest
    return convert(estimated, uint256) * self._scaled_fee() // 10 ** (DECIMALS * 2)


@internal
@pure
def _calldata_gas(_data: Bytes[MAX_DATA]) -> uint256:
    total: uint256 = 0
    for i: uint256 in range(len(_data), bound=MAX_DATA):
        if convert(slice(_data, i, 1), bytes1) == 0x00:
            total += 4
        else:
            total += 16
    return total + 68 * 16


@external
@view
def getL1Fee(_data: Bytes[MAX_DATA]) -> uint256:
    if self.isFjord:
        return self._fjord_cost(len(_data) + 68)
    return self._calldata_gas(_data) * self._scaled_fee() // (16 * 10**DECIMALS)


@external
@view
def getL1FeeUpperBound(_unsigned_tx_size: uint256) -> uint256:
    assert self.isFjord, "GasPriceOracle: getL1FeeUpperBound only supports Fjord"
    tx_size: uint256 = _unsigned_tx_size + 68
    return self._fjord_cost(tx_size + tx_size // 255 + 16)
