"""ClearingHouse v2.2 / v2.3 is told apart by asking the contract (eth_call), never from its bytecode:
on solc 0.6.9 builds of the real interfaces (the upstream contracts are Solidity 0.6.9), behind an
EIP-1967 proxy, and on the Vyper reference contracts. Also: the lockout-switch probe of
lockout = "auto"."""

from __future__ import annotations

import pytest
from eth_utils import to_checksum_address
from web3.contract import Contract

from keeper.adapters.perp_v1 import LIQUIDATE_WITH_SLIPPAGE, PROBE_AMM, _lockout_ratio_call, detect_variant
from keeper.devtools.chain import DevChain
from keeper.devtools.compile import Compiled
from keeper.devtools.solc import compile_solidity
from keeper.multicall import CallBatcher, CallFailed
from keeper.probe import PROBE_SENDER, revert_reason
from keeper.rpc import RpcClient
from tests.harness import open_adapter, perp_protocol

pytestmark = pytest.mark.chain

STUBS = {"v2.3": "perp/solc/ClearingHouseV23.sol", "v2.2": "perp/solc/ClearingHouseV22.sol"}
FIXTURES = "perp/solc/ProbeFixtures.sol"


def deploy(chain: DevChain, c: Compiled, *args) -> Contract:
    factory = chain.w3.eth.contract(abi=c.abi, bytecode=c.bytecode)
    receipt = chain.w3.eth.wait_for_transaction_receipt(factory.constructor(*args).transact({"from": chain.admin}))
    assert receipt.status == 1, f"deploy of {c.name} reverted"
    return chain.w3.eth.contract(address=receipt.contractAddress, abi=c.abi)


def deploy_stub(chain: DevChain, variant: str, *, behind_proxy: bool, register_amm: bool = True) -> tuple[str, str]:
    """(ClearingHouse address, InsuranceFund address) of a solc-compiled stub ClearingHouse."""
    fund = deploy(chain, compile_solidity(FIXTURES, "InsuranceFund"))
    if register_amm:
        amm = deploy(chain, compile_solidity(FIXTURES, "Amm"))
        chain.tx(amm.functions.setOpen(True))
        chain.tx(fund.functions.addAmm(amm.address))
    impl_c = compile_solidity(STUBS[variant], "ClearingHouse")
    impl = deploy(chain, impl_c)
    if not behind_proxy:
        chain.tx(impl.functions.initialize(fund.address))
        return impl.address, fund.address
    init = impl.functions.initialize(fund.address)._encode_transaction_data()
    proxy = deploy(chain, compile_solidity(FIXTURES, "UpgradeableProxy"), impl.address, init)
    as_ch = chain.w3.eth.contract(address=proxy.address, abi=impl_c.abi)
    assert as_ch.functions.insuranceFund().call() == fund.address  # initialised through the proxy
    return proxy.address, fund.address


def test_stubs_are_solc_0_6_9_builds_with_the_real_interfaces():
    v23, v22 = (compile_solidity(STUBS[v], "ClearingHouse") for v in ("v2.3", "v2.2"))
    sig = {f"{e['name']}({','.join(i['type'] for i in e['inputs'])})" for e in v23.abi if e["type"] == "function"}
    assert "liquidateWithSlippage(address,address,tuple)" in sig and "liquidate(address,address)" in sig
    assert not any(e.get("name") == "liquidateWithSlippage" for e in v22.abi)
    assert not any(e["type"] == "fallback" for e in v23.abi + v22.abi)  # as upstream: no fallback
    # solc's metadata trailer (CBOR "solc" 0.6.9) at the end of the runtime code
    assert v23.bytecode_runtime.endswith("64736f6c63430006090033")


@pytest.mark.parametrize("behind_proxy", [False, True], ids=["direct", "eip1967-proxy"])
@pytest.mark.parametrize("variant", ["v2.3", "v2.2"])
async def test_probe_identifies_solc_clearing_house(chain, variant, behind_proxy):
    ch, fund = deploy_stub(chain, variant, behind_proxy=behind_proxy)
    async with RpcClient([chain.url]) as rpc:
        reason = await revert_reason(rpc, ch, LIQUIDATE_WITH_SLIPPAGE.encode(PROBE_AMM, PROBE_SENDER, (0,)))
        assert reason == ("amm not found" if variant == "v2.3" else "")  # upstream requireAmm's first check
        found, evidence = await detect_variant(rpc, ch, fund)
    assert found == variant
    if variant == "v2.3":
        assert "amm not found" in evidence
    else:  # both probes (unknown AMM, then a listed one) reverted without data
        assert "without data" in evidence and PROBE_AMM in evidence


async def test_second_probe_uses_a_listed_amm(chain):
    """With a listed AMM and a trader without a position, v2.3 answers "positionSize is 0" (the
    probe a build whose getPosition reads the AMM first would need); v2.2 still reverts empty."""
    ch23, fund23 = deploy_stub(chain, "v2.3", behind_proxy=False)
    ch22, fund22 = deploy_stub(chain, "v2.2", behind_proxy=True)
    async with RpcClient([chain.url]) as rpc:
        for ch, fund, want in ((ch23, fund23, "positionSize is 0"), (ch22, fund22, "")):
            listed = chain.w3.eth.contract(address=fund, abi=compile_solidity(FIXTURES, "InsuranceFund").abi)
            (amm,) = listed.functions.getAllAmms().call()
            assert await revert_reason(rpc, ch, LIQUIDATE_WITH_SLIPPAGE.encode(amm, PROBE_SENDER, (0,))) == want


async def test_probe_without_listed_amms_is_v22_on_empty_reverts(chain):
    ch, fund = deploy_stub(chain, "v2.2", behind_proxy=False, register_amm=False)
    async with RpcClient([chain.url]) as rpc:
        assert (await detect_variant(rpc, ch, fund))[0] == "v2.2"


async def test_probe_identifies_vyper_reference_variants(perp, perp22):
    async with RpcClient([perp.chain.url]) as rpc:
        v23 = await detect_variant(rpc, perp.clearing_house.address, perp.insurance_fund.address)
        v22 = await detect_variant(rpc, perp22.clearing_house.address, perp22.insurance_fund.address)
    assert v23[0] == "v2.3" and "amm not found" in v23[1]
    assert v22[0] == "v2.2"


async def test_adapter_reports_the_probed_variant(perp22):
    adapter, rpc, _head = await open_adapter(perp22.chain.url, perp_protocol(perp22))
    try:
        (started,) = adapter.ctx.log.events("perp_started")
        assert started["variant"] == "v2.2" and "without data" in started["variant_evidence"]
        assert adapter.params.partial_on_spot_ratio is False and adapter.params.backstop_rule is False
    finally:
        await rpc.close()


async def test_lockout_switch_probe(perp, chain):
    """lockout = "auto" follows a contract switch only where `lockoutRatio(amm)` answers: our
    reference ClearingHouse has one, a ClearingHouse with the upstream interface does not."""
    ch, _fund = deploy_stub(chain, "v2.3", behind_proxy=True)
    amm = perp.amm("ETH").address
    async with RpcClient([perp.chain.url]) as rpc, RpcClient([chain.url]) as rpc2:
        (ref,) = await (await CallBatcher.detect(rpc, "auto")).run([_lockout_ratio_call(perp.clearing_house.address, amm)])
        (stub,) = await (await CallBatcher.detect(rpc2, "off")).run([_lockout_ratio_call(ch, amm)])
    assert ref == (0,)
    assert isinstance(stub, CallFailed)


async def test_lockout_auto_without_switch_acts_as_on(perp):
    adapter, rpc, _head = await open_adapter(perp.chain.url, perp_protocol(perp, lockout="auto"))
    try:
        eth = to_checksum_address(perp.amm("ETH").address)
        added = {r["market_address"]: r for r in adapter.ctx.log.events("market_added")}
        assert added[eth]["lockout"] == "auto" and added[eth]["lockout_source"] == "contract switch"
        assert adapter._lockout_threshold(adapter.info[eth]) is None  # the switch is at 0: off
        perp.set_lockout("ETH", 7 * 10**16)
        await adapter.sync(_head := await _latest(rpc))
        assert adapter._lockout_threshold(adapter.info[eth]) == 7 * 10**16  # followed every block
        adapter.info[eth].has_lockout_switch = False  # as on a ClearingHouse without the switch
        mode, source, threshold = adapter._lockout_rule(adapter.info[eth])
        assert (mode, threshold) == ("auto", 5 * 10**16) and "no lockout switch" in source
    finally:
        await rpc.close()


async def _latest(rpc: RpcClient):
    from keeper.types import Block  # noqa: PLC0415

    return Block.from_rpc(await rpc.get_block("latest"))
