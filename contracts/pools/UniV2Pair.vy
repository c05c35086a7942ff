# pragma version ~=0.4.3
"""
@title Reference Uniswap V2 pair
@notice Test/demo fixture with UniswapV2Pair's swap semantics: token0/token1, getReserves() ->
        (uint112, uint112, uint32), swap(amount0Out, amount1Out, to, data) that sends the outputs
        optimistically, calls uniswapV2Call(msg.sender, amount0Out, amount1Out, data) on `to` when
        data is not empty, then requires the 0.3 % fee k-check
            (b0 * 1000 - in0 * 3) * (b1 * 1000 - in1 * 3) >= r0 * r1 * 1000**2,
        sync() and skim(to), with the original revert strings and a lock.
        Simplifications: no LP token (liquidity is seeded by transferring tokens and calling sync()),
        no price accumulators, no protocol fee, no factory.
"""

from ethereum.ercs import IERC20

interface IUniswapV2Callee:
    def uniswapV2Call(sender: address, amount0: uint256, amount1: uint256, data: Bytes[1024]): nonpayable

event Swap:
    sender: indexed(address)
    amount0In: uint256
    amount1In: uint256
    amount0Out: uint256
    amount1Out: uint256
    to: indexed(address)

event Sync:
    reserve0: uint112
    reserve1: uint112

token0: public(address)
token1: public(address)
reserve0: uint112
reserve1: uint112
blockTimestampLast: uint32


@deploy
def __init__(token0: address, token1: address):
    """
    @notice Uniswap sorts the tokens by address (token0 < token1); so must the deployer
    """
    assert convert(token0, uint256) < convert(token1, uint256), "UniswapV2: IDENTICAL_ADDRESSES"
    assert token0 != empty(address), "UniswapV2: ZERO_ADDRESS"
    self.token0 = token0
    self.token1 = token1


@external
@view
def getReserves() -> (uint112, uint112, uint32):
    return self.reserve0, self.reserve1, self.blockTimestampLast


@internal
def _update(balance0: uint256, balance1: uint256):
    assert balance0 <= convert(max_value(uint112), uint256) and balance1 <= convert(max_value(uint112), uint256), "UniswapV2: OVERFLOW"
    self.reserve0 = convert(balance0, uint112)
    self.reserve1 = convert(balance1, uint112)
    self.blockTimestampLast = convert(block.timestamp % 2**32, uint32)
    log Sync(reserve0=self.reserve0, reserve1=self.reserve1)


@external
@nonreentrant
def swap(amount0Out: uint256, amount1Out: uint256, to: address, data: Bytes[1024]):
    assert amount0Out > 0 or amount1Out > 0, "UniswapV2: INSUFFICIENT_OUTPUT_AMOUNT"
    r0: uint256 = convert(self.reserve0, uint256)
    r1: uint256 = convert(self.reserve1, uint256)
    assert amount0Out < r0 and amount1Out < r1, "UniswapV2: INSUFFICIENT_LIQUIDITY"
    t0: address = self.token0
    t1: address = self.token1
    assert to != t0 and to != t1, "UniswapV2: INVALID_TO"
    if amount0Out > 0:
        assert extcall IERC20(t0).transfer(to, amount0Out, default_return_value=True), "UniswapV2: TRANSFER_FAILED"
    if amount1Out > 0:
        assert extcall IERC20(t1).transfer(to, amount1Out, default_return_value=True), "UniswapV2: TRANSFER_FAILED"
    if len(data) > 0:
        extcall IUniswapV2Callee(to).uniswapV2Call(msg.sender, amount0Out, amount1Out, data)
    balance0: uint256 = staticcall IERC20(t0).balanceOf(self)
    balance1: uint256 = staticcall IERC20(t1).balanceOf(self)
    amount0In: uint256 = 0
    amount1In: uint256 = 0
    if balance0 > r0 - amount0Out:
        amount0In = balance0 - (r0 - amount0Out)
    if balance1 > r1 - amount1Out:
        amount1In = balance1 - (r1 - amount1Out)
    assert amount0In > 0 or amount1In > 0, "UniswapV2: INSUFFICIENT_INPUT_AMOUNT"
    balance0_adjusted: uint256 = balance0 * 1000 - amount0In * 3
    balance1_adjusted: uint256 = balance1 * 1000 - amount1In * 3
    assert balance0_adjusted * balance1_adjusted >= r0 * r1 * 1000**2, "UniswapV2: K"
    self._update(balance0, balance1)
    log Swap(sender=msg.sender, amount0In=amount0In, amount1In=amount1In, amount0Out=amount0Out, amount1Out=amount1Out, to=to)


@external
@nonreentrant
def skim(to: address):
    """
    @notice Send the balances above the reserves to `to`
    """
    t0: address = self.token0
    t1: address = self.token1
    assert extcall IERC20(t0).transfer(to, staticcall IERC20(t0).balanceOf(self) - convert(self.reserve0, uint256), default_return_value=True)
    assert extcall IERC20(t1).transfer(to, staticcall IERC20(t1).balanceOf(self) - convert(self.reserve1, uint256), default_return_value=True)


@external
@nonreentrant
def sync():
    """
    @notice Set the reserves to the balances (how liquidity is seeded: transfer, then sync)
    """
    self._update(staticcall IERC20(self.token0).balanceOf(self), staticcall IERC20(self.token1).balanceOf(self))
