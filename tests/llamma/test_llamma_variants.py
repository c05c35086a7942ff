"""Controller variants identified by eth_call probes, on Vyper 0.4.x and Vyper 0.3.10 bytecode.

Every variant of PROTOCOLS.md §B.0 — M1/M2, LlamaLend 0–7, 8, 9–10 and V3 — is deployed twice:
the reference controller compiled by the project's Vyper 0.4.x, and the same controller behind a
dispatcher compiled by Vyper 0.3.10 (`optimize codesize`: a hash table holding selectors as data;
tests/llamma/shells.py). On both the keeper's probes name the variant, and a partial `frac`
liquidation sent by the keeper lands with that variant's encoding and rounding. The PUSH4 scan the
keeper used before is shown to miss selectors the 0.3.10 dispatcher does dispatch."""

from __future__ import annotations

import pytest
from eth_utils import keccak

from keeper.adapters.llamma import CONTROLLER_VARIANTS, probe_controller_variant
from keeper.devtools.chain import DevChain
from keeper.devtools.compile import compile_contract
from keeper.devtools.llamma_env import COMPILERS, CONTROLLER_CONTRACT, VARIANTS, LlammaDeployment, deploy_llamma, shell_contract
from keeper.probe import PROBE_SENDER, revert_reason
from keeper.rpc import RpcClient
from tests.harness import KEEPER, keeper_config, open_adapter, run_engine
from tests.llamma.shells import VARIANTS as SHELL_VARIANTS
from tests.llamma.shells import shell_path, shell_source

pytestmark = [pytest.mark.chain, pytest.mark.xdist_group("llamma_variants")]  # one worker: one module anvil
E = 10**18
ZERO = "0x" + "00" * 20
LIQ_EXT_USE_ETH = bytes.fromhex("036aed88")  # liquidate_extended(address,uint256,uint256,bool,address,uint256[])
LIQ_EXT = bytes.fromhex("fed9698c")  # liquidate_extended(address,uint256,uint256,address,uint256[])
LIQ_EXT_BYTES = bytes.fromhex("d28952fc")  # (..., bytes)
APPROVAL = bytes.fromhex("e1270b6e")  # approval(address,address)
BORROWED_TOKEN = bytes.fromhex("765337b6")  # borrowed_token()


def old_code_has_selector(code_hex: str, selector: bytes) -> bool:
    """keeper.abi.code_has_selector as it was (copied: the keeper no longer uses it)."""
    code = bytes.fromhex(code_hex[2:] if code_hex.startswith("0x") else code_hex)
    return b"\x63" + selector in code


def old_variant(code_hex: str) -> str:
    """How adapters/llamma.py classified a controller before: by PUSH4 scan of its runtime code."""
    v3 = old_code_has_selector(code_hex, LIQ_EXT) or old_code_has_selector(code_hex, LIQ_EXT_BYTES)
    return "v3" if v3 else "m2"


def functions(abi: list[dict]) -> set[str]:
    return {f"{e['name']}({','.join(i['type'] for i in e['inputs'])})" for e in abi if e["type"] == "function"}


def just_liquidatable(m: LlammaDeployment, user: str) -> None:
    """Lower the oracle 1 % at a time (no arbitrage) until health(user, True) < 0: a profitable liquidation."""
    for _ in range(30):
        if m.health(user, True) < 0:
            return
        m.set_oracle_price(m.oracle_price() * 99 // 100)
    raise AssertionError("loan still healthy")


# ---- compilers and shells (no chain) -----------------------------------------------------------


@pytest.mark.parametrize("variant", SHELL_VARIANTS)
def test_shells_are_generated_and_compiled_by_vyper_0310(variant):
    """The committed 0.3.10 shells are what tests/llamma/shells.py generates, are built by 0.3.10
    (the logic by 0.4.x), expose exactly the logic's functions, and hold no PUSH4 of them."""
    assert shell_path(variant).read_text() == shell_source(variant)
    shell = compile_contract(f"llamma/v0_3_10/{variant}")
    logic = compile_contract(f"llamma/{variant}")
    assert shell.compiler.startswith("0.3.10") and logic.compiler.startswith("0.4.")
    assert functions(shell.abi) == functions(logic.abi)
    selectors = [keccak(text=s)[:4] for s in functions(shell.abi)]
    assert not [s for s in selectors if old_code_has_selector(shell.bytecode_runtime, s)]
    assert all(s in bytes.fromhex(shell.bytecode_runtime[2:]) for s in selectors)  # they are there, as data


@pytest.mark.parametrize("variant", SHELL_VARIANTS)
def test_reference_variants_expose_their_distinguishing_selectors(variant):
    sels = {keccak(text=s)[:4] for s in functions(compile_contract(f"llamma/{variant}").abi)}
    expected = {
        "ControllerM2": (LIQ_EXT_USE_ETH,),
        "ControllerL0": (LIQ_EXT_USE_ETH, BORROWED_TOKEN),
        "ControllerL8": (LIQ_EXT, BORROWED_TOKEN),
        "ControllerL9": (LIQ_EXT, LIQ_EXT_BYTES, BORROWED_TOKEN),
        "ControllerV3": (LIQ_EXT, LIQ_EXT_BYTES, BORROWED_TOKEN, APPROVAL),
    }[variant]
    assert set(expected) <= sels
    assert not ({LIQ_EXT_USE_ETH, LIQ_EXT, LIQ_EXT_BYTES, BORROWED_TOKEN, APPROVAL} - set(expected)) & sels


def test_compiler_is_chosen_by_pragma_and_part_of_the_cache_key():
    from keeper.devtools.compile import source_compiler  # noqa: PLC0415

    assert source_compiler("# pragma version 0.3.10\n") == "0.3.10"
    assert source_compiler("# @version 0.3.10\n") == "0.3.10"
    assert source_compiler("# pragma version ~=0.4.3\n") is None
    assert source_compiler('"""no pragma"""\n') is None


# ---- on a chain ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chain(module_anvil) -> DevChain:
    return DevChain(module_anvil.url)


@pytest.fixture(scope="module")
def markets(chain) -> dict[tuple[str, str], LlammaDeployment]:
    """Every variant × compiler, one loan each (8-decimal collateral)."""
    out = {}
    for compiler in COMPILERS:
        for variant in VARIANTS:
            m = deploy_llamma(chain, variant=variant, compiler=compiler, collateral_decimals=8)
            m.create_max_loan(chain.accounts[1], m.units(10), 10)
            out[(variant, compiler)] = m
    return out


@pytest.fixture
def fresh(chain):
    with chain.reverted():
        yield chain


def _ids(params):
    return [f"{v}-vyper{c}" for v, c in params]


PAIRS = [(v, c) for c in COMPILERS for v in VARIANTS]


def test_old_push4_scan_fails_on_the_0310_dispatcher(markets, chain):
    """On 0.3.10 bytecode the PUSH4 scan finds none of the selectors the controller does dispatch
    (the calls below reach them: they revert with the functions' own reasons or answer), so the old
    code called every one of them "m2" — also the V3 and LlamaLend 8–10 controllers, whose partial
    liquidations were then encoded with the use_eth selector 036aed88 they do not have. On 0.4.x
    bytecode the same scan happened to work."""
    alice = chain.accounts[1]
    for variant in VARIANTS:
        m = markets[(variant, "0.3.10")]
        code = chain.w3.eth.get_code(m.controller.address).to_0x_hex()
        frac_sel = LIQ_EXT_USE_ETH if CONTROLLER_VARIANTS[variant].use_eth_abi else LIQ_EXT
        # dispatched: a healthy loan makes the liquidation entry point revert with its own reason
        fn = m.controller.get_function_by_selector("0x" + frac_sel.hex())
        args = (alice, 0, E, False, ZERO, []) if frac_sel == LIQ_EXT_USE_ETH else (alice, 0, E, ZERO, [])
        with pytest.raises(Exception, match="Not enough rekt"):
            fn(*args).call({"from": KEEPER})
        assert not old_code_has_selector(code, frac_sel)
        if variant != "m2":
            assert m.controller.functions.borrowed_token().call() == m.stablecoin.address
            assert not old_code_has_selector(code, BORROWED_TOKEN)
        assert old_variant(code) == "m2"  # the misclassification of issue 7
        logic_code = chain.w3.eth.get_code(markets[(variant, "0.4")].controller.address).to_0x_hex()
        assert old_code_has_selector(logic_code, frac_sel)
    assert old_variant(chain.w3.eth.get_code(markets[("v3", "0.4")].controller.address).to_0x_hex()) == "v3"


@pytest.mark.parametrize(("variant", "compiler"), PAIRS, ids=_ids(PAIRS))
async def test_probe_classifies_every_variant(markets, variant, compiler, chain):
    m = markets[(variant, compiler)]
    rpc = await RpcClient([chain.url]).start()
    try:
        found = await probe_controller_variant(rpc, m.controller.address)
        assert found.name == variant
        # what the probes rest on, as the real contracts answer it
        rc = await revert_reason(rpc, m.controller.address, bytes.fromhex("2e4af52a") + (1).to_bytes(32, "big") + bytes(32))
        assert rc == ("Loan doesn't exist" if found.use_eth_abi else "")
        with pytest.raises(Exception, match="Loan doesn't exist"):
            m.controller.functions.health(PROBE_SENDER).call()
    finally:
        await rpc.close()


@pytest.mark.parametrize(("variant", "compiler"), PAIRS, ids=_ids(PAIRS))
async def test_adapter_reads_each_variant(markets, variant, compiler, chain):
    """The started adapter knows the variant, the stablecoin (borrowed_token() or AMM.coins(0)) and
    the rounding rules."""
    m = markets[(variant, compiler)]
    adapter, rpc, _head = await open_adapter(chain.url, {"kind": "llamma", "name": "crv", "controllers": [m.controller.address]})
    try:
        mk = adapter.mkts[m.controller.address]
        v = CONTROLLER_VARIANTS[variant]
        assert (mk.variant, mk.use_eth_abi, mk.ceil_debt, mk.ceil_frac) == (variant, v.use_eth_abi, v.ceil_debt, v.ceil_frac)
        assert mk.stablecoin == m.stablecoin.address
        assert mk.abi.fn("liquidate_extended", 6 if v.use_eth_abi else 5)
        assert adapter.ctx.log.events("market_added")[0]["variant"] == variant
    finally:
        await rpc.close()


@pytest.mark.parametrize(("variant", "compiler"), PAIRS, ids=_ids(PAIRS))
async def test_keeper_frac_liquidation_lands(markets, variant, compiler, fresh, tmp_path):
    """With capital capped below a full liquidation, the keeper sends a partial `frac` liquidation
    with the variant's selector; it lands (on the 0.3.10 dispatcher too), repays d rounded as the
    variant rounds it, and leaves the rest of the loan open."""
    chain = fresh
    m = markets[(variant, compiler)]
    ctl = m.controller.functions
    alice = chain.accounts[1]
    m.create_max_loan(chain.accounts[2], m.units(3), 10, E // 2)  # n_loans > 1: the 0.3.10 line rounds debt up
    just_liquidatable(m, alice)
    assert ctl.health(chain.accounts[2], True).call() >= 0
    debt0 = ctl.debt(alice).call()
    pay = ctl.tokens_to_liquidate(alice).call({"from": KEEPER})
    m.fund_stablecoin(KEEPER, pay)
    start = chain.block_number()
    cap = pay // 3 // 10**m.borrowed_decimals
    cfg = keeper_config(
        chain.url,
        tmp_path / "k.sqlite",
        [
            {
                "kind": "llamma",
                "name": "crv",
                "controllers": [m.controller.address],
                "start_block": 0,
                "max_capital": str(cap),
                "min_frac": "0.01",
                "approval": "unlimited",
            }
        ],
    )
    _engine, log = await run_engine(cfg, 3)
    evs = [e for e in m.controller.events.Liquidate.get_logs(from_block=start) if e["args"]["liquidator"] == KEEPER]
    assert len(evs) == 1, str([r for r in log.records if r["level"] != "debug"][-8:])
    ev = evs[0]
    tx = chain.w3.eth.get_transaction(ev["transactionHash"])
    data = bytes(tx["input"])
    expected_sel = LIQ_EXT_USE_ETH if CONTROLLER_VARIANTS[variant].use_eth_abi else LIQ_EXT
    assert data[:4] == expected_sel
    frac = int.from_bytes(data[68:100], "big")
    assert 0 < frac < E
    d = ev["args"]["debt"]
    assert d == (-(-debt0 * frac // E) if variant == "v3" else debt0 * frac // E)
    assert ctl.debt(alice).call() == debt0 - d > 0
    assert chain.w3.eth.get_transaction_receipt(ev["transactionHash"]).status == 1
    landed = log.events("liquidation_landed")
    assert landed and landed[0]["kind"] == "frac"


async def test_m2_weth_full_liquidation_pays_native_eth_through_the_0310_dispatcher(fresh, tmp_path):
    """An M2 WETH market behind the 0.3.10 dispatcher: the keeper's full `liquidate(user, min_x)`
    unwraps the collateral (the shell's payable fallback takes the WETH withdrawal) and the keeper
    receives native ETH."""
    chain = fresh
    m = deploy_llamma(chain, variant="m2", compiler="0.3.10", weth_collateral=True)
    alice = chain.accounts[3]
    m.create_max_loan(alice, m.units(5), 10)
    just_liquidatable(m, alice)
    pay = m.controller.functions.tokens_to_liquidate(alice).call({"from": KEEPER})
    m.fund_stablecoin(KEEPER, pay * 2)
    start = chain.block_number()
    cfg = keeper_config(
        chain.url,
        tmp_path / "k.sqlite",
        [{"kind": "llamma", "name": "crv", "controllers": [m.controller.address], "start_block": 0, "approval": "unlimited"}],
    )
    weth0 = m.collateral.functions.balanceOf(KEEPER).call()
    _engine, log = await run_engine(cfg, 3)
    (ev,) = [e for e in m.controller.events.Liquidate.get_logs(from_block=start) if e["args"]["liquidator"] == KEEPER]
    assert bytes(chain.w3.eth.get_transaction(ev["transactionHash"])["input"])[:4] == bytes.fromhex("bcbaf487")
    assert m.collateral.functions.balanceOf(KEEPER).call() == weth0
    (landed,) = log.events("liquidation_landed")
    assert landed["collateral_paid_in"] == "native" and landed["collateral_received"] == ev["args"]["collateral_received"] > 0
    assert not m.controller.functions.loan_exists(alice).call()


def test_every_variant_has_a_reference_and_a_shell():
    assert set(CONTROLLER_CONTRACT) == set(VARIANTS) == set(CONTROLLER_VARIANTS)
    assert {shell_contract(v).split("/")[-1] for v in VARIANTS} == set(SHELL_VARIANTS)
