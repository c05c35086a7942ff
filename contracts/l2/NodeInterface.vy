# pragma version ~=0.4.3
"""
@title Reference Arbitrum NodeInterface (0x00000000000000000000000000000000000000C8), L1 component only
@notice On Arbitrum the NodeInterface is a virtual contract (no code; answered by the node to eth_call).
        This reference, placed at the same address with anvil_setCode, answers the one method the
        keeper uses: gasEstimateL1Component(to, contractCreation, data) →
        (gasEstimateForL1, baseFee, l1BaseFeeEstimate), where the poster's L1 cost in wei is
        l1BaseFeeEstimate × 16 × (len(data) + overhead) and gasEstimateForL1 is that cost in L2 gas at
        baseFee, rounded up. baseFee is the settable `l2BaseFee`, or the block's base fee while it is 0.
        Storage defaults (all zero) are valid after anvil_setCode; `initialize()` claims ownership.
"""

MAX_DATA: constant(uint256) = 65536

owner: public(address)
l1BaseFeeEstimate: public(uint256)
l2BaseFee: public(uint256)  # 0: block.basefee
overhead: public(uint256)  # bytes added to the data's length (Arbitrum: ~140 for the transaction's envelope)


@deploy
def __init__():
    self.owner = msg.sender


@external
def initialize():
    """Claim ownership where the constructor did not run (runtime code placed with anvil_setCode)."""
    assert self.owner == empty(address), "already initialized"
    self.owner = msg.sender


@external
def set_params(_l1_base_fee_estimate: uint256, _l2_base_fee: uint256, _overhead: uint256):
    assert msg.sender == self.owner, "only owner"
    self.l1BaseFeeEstimate = _l1_base_fee_estimate
    self.l2BaseFee = _l2_base_fee
    self.overhead = _overhead


@external
@view
def gasEstimateL1Component(_to: address, _contract_creation: bool, _data: Bytes[MAX_DATA]) -> (uint64, uint256, uint256):
    base_fee: uint256 = self.l2BaseFee
    if base_fee == 0:
        base_fee = block.basefee
    l1_cost: uint256 = self.l1BaseFeeEstimate * 16 * (len(_data) + self.overhead)
    gas: uint256 = 0
    if base_fee > 0:
        gas = (l1_cost + base_fee - 1) // base_fee
    return convert(gas, uint64), base_fee, self.l1BaseFeeEstimate
