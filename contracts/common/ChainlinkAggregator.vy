# pragma version ~=0.4.3
"""
@title Settable Chainlink AggregatorV3-compatible price feed
@notice For the keeper's gas-to-quote conversion in tests and the demo
        (`latestRoundData`, `decimals`, `description`, same selectors as Chainlink).
"""

decimals: public(uint8)
description: public(String[64])
owner: public(address)
answer: int256
round_id: uint80
updated_at: uint256


@deploy
def __init__(_decimals: uint8, _description: String[64], _answer: int256):
    self.decimals = _decimals
    self.description = _description
    self.owner = msg.sender
    self.answer = _answer
    self.round_id = 1
    self.updated_at = block.timestamp


@external
def set_answer(_answer: int256):
    assert msg.sender == self.owner, "only owner"
    self.answer = _answer
    self.round_id += 1
    self.updated_at = block.timestamp


@external
@view
def latestRoundData() -> (uint80, int256, uint256, uint256, uint80):
    return (self.round_id, self.answer, self.updated_at, self.updated_at, self.round_id)


@external
@view
def latestAnswer() -> int256:
    return self.answer
