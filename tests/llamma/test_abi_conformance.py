"""Selectors and event topics of the crvUSD / LlamaLend interfaces (docs/PROTOCOLS.md §B):
the spec's values are keccak of the canonical signatures, the hand-written ABIs in abis/llamma/
contain them, and the compiled reference contracts expose exactly their ABI variant's selectors.
No chain needed."""

from __future__ import annotations

import json

import pytest
from eth_utils import keccak

from keeper.devtools.compile import compile_contract
from keeper.devtools.paths import REPO_ROOT

ABI_DIR = REPO_ROOT / "abis" / "llamma"
EIP170_LIMIT = 24_576

# canonical signature -> selector, as listed in docs/PROTOCOLS.md §B.1 / §B.5
CONTROLLER_COMMON = {
    "users_to_liquidate()": "007c98ab",
    "users_to_liquidate(uint256)": "80e8f6ec",
    "users_to_liquidate(uint256,uint256)": "90f8667d",
    "health(address)": "e2d8ebee",
    "health(address,bool)": "8908ea82",
    "liquidate(address,uint256)": "bcbaf487",
    "tokens_to_liquidate(address)": "1b25cdaf",
    "tokens_to_liquidate(address,uint256)": "546e040d",
    "user_state(address)": "ec74d0a8",
    "user_prices(address)": "2c5089c3",
    "loan_exists(address)": "a21adb9e",
    "n_loans()": "6cce39be",
    "loans(uint256)": "e1ec3c68",
    "loan_ix(address)": "7128f3b8",
    "debt(address)": "9b6c56ec",
    "total_debt()": "31dc3ca8",
    "liquidation_discount()": "627d2b83",
    "loan_discount()": "5449b9cb",
    "liquidation_discounts(address)": "5457ff7b",
    "amm()": "2a943945",
    "collateral_token()": "2621db2f",
    "factory()": "c45a0155",
    "amm_price()": "d9f11a64",
}
CONTROLLER_M2_ONLY = {
    "liquidate(address,uint256,bool)": "3ecdb828",
    "liquidate_extended(address,uint256,uint256,bool,address,uint256[])": "036aed88",
}
CONTROLLER_V3_ONLY = {
    "liquidate_extended(address,uint256,uint256,address,uint256[])": "fed9698c",
    "liquidate_extended(address,uint256,uint256,address,uint256[],bytes)": "d28952fc",
    "borrowed_token()": "765337b6",
    "approval(address,address)": "e1270b6e",
}
AMM = {
    "coins(uint256)": "c6610657",
    "A()": "f446c1d0",
    "fee()": "ddca3f43",
    "price_oracle()": "86fc88d3",
    "get_p()": "f2388acb",
    "active_band()": "8f8654c5",
    "active_band_with_skip()": "c16ef264",
    "min_band()": "ca72a821",
    "max_band()": "aaa615fc",
    "bands_x(int256)": "ebcb0067",
    "bands_y(int256)": "31f7e306",
    "p_oracle_up(int256)": "2eb858e7",
    "p_oracle_down(int256)": "24299b7a",
    "get_dy(uint256,uint256,uint256)": "556d6e9f",
    "get_dxdy(uint256,uint256,uint256)": "c49202e7",
    "get_dx(uint256,uint256,uint256)": "37ed3a7a",
    "exchange(uint256,uint256,uint256,uint256)": "5b41b908",
    "exchange(uint256,uint256,uint256,uint256,address)": "a64833a0",
    "exchange_dy(uint256,uint256,uint256,uint256)": "a3e346ec",
    "exchange_dy(uint256,uint256,uint256,uint256,address)": "3c10269a",
    "get_sum_xy(address)": "544fb5c1",
    "get_xy(address)": "84738380",  # per band (real AMM: DynArray[uint256, MAX_TICKS_UINT][2])
    "read_user_tick_numbers(address)": "b461100d",
    "get_x_down(address)": "62ca4b18",
    "get_y_up(address)": "ee4c32ee",
    "has_liquidity(address)": "e8dd1ef1",
}
AMM_IN_ABI_FILE = set(AMM) - {
    "active_band_with_skip()",
    "get_dx(uint256,uint256,uint256)",
    "exchange_dy(uint256,uint256,uint256,uint256)",
    "exchange_dy(uint256,uint256,uint256,uint256,address)",
}
CONTROLLER_FACTORY = {
    "n_collaterals()": "12397fa1",
    "controllers(uint256)": "e94b0dd2",
    "amms(uint256)": "86a8cdbc",
    "stablecoin()": "e9cbd822",
}
LENDING_FACTORY = {"market_count()": "fd775c78", "controllers(uint256)": "e94b0dd2", "amms(uint256)": "86a8cdbc"}
OTHER = {
    "health_calculator(address,int256,int256,bool)": "0b8db681",
    "health_calculator(address,int256,int256,bool,uint256)": "22c71453",
    "callback_liquidate(address,uint256,uint256,uint256,uint256[])": "4ea696bb",
    "callback_liquidate(address,uint256,uint256,uint256,uint256[],bytes)": "750abc51",
}

# entry points the keeper's variant probes call (keeper/adapters/llamma.py, abis/llamma/Controller_Probes.json)
PROBES = {
    "borrowed_token()": "765337b6",
    "approval(address,address)": "e1270b6e",
    "remove_collateral(uint256,bool)": "2e4af52a",  # M1/M2, LlamaLend 0-7 (use_eth)
    "borrow_more_extended(uint256,uint256,address,uint256[],bytes)": "24977ef3",  # LlamaLend 9-10, V3
}

CONTROLLER_EVENTS = {
    "UserState(address,uint256,uint256,int256,int256,uint256)": "0xeec6b7095a637e006c79c1819d696e353a8f703db2c49fc0219e17a8fd04f7f2",
    "Borrow(address,uint256,uint256)": "0xe1979fe4c35e0cef342fef5668e2c8e7a7e9f5d5d1ca8fee0ac6c427fa4153af",
    "Repay(address,uint256,uint256)": "0x77c6871227e5d2dec8dadd5354f78453203e22e669cd0ec4c19d9a8c5edb31d0",
    "RemoveCollateral(address,uint256)": "0xe25410a4059619c9594dc6f022fe231b02aaea733f689e7ab0cd21b3d4d0eb54",
    "Liquidate(address,address,uint256,uint256,uint256)": "0x642dd4d37ddd32036b9797cec464c0045dd2118c549066ae6b0f88e32240c2d0",
}
AMM_EVENTS = {
    "TokenExchange(address,uint256,uint256,uint256,uint256)": "0xb2e76ae99761dc136e598d4a629bb347eccb9532a5f8bbd72e18467c3c34cc98",
    "Deposit(address,uint256,int256,int256)": "0x7e4f5fadb3361b33669433b392d1a203b7a236710eb272650052592e6ce62f09",
    "Withdraw(address,uint256,uint256)": "0xf279e6a1f5e320cca91135676d9cb6e44ca8a08c0b88342bcdb1144f6511b568",
}

ALL_SELECTORS = {
    **CONTROLLER_COMMON,
    **CONTROLLER_M2_ONLY,
    **CONTROLLER_V3_ONLY,
    **AMM,
    **CONTROLLER_FACTORY,
    **LENDING_FACTORY,
    **OTHER,
    **PROBES,
}


def _type(param: dict) -> str:
    t = param["type"]
    if t.startswith("tuple"):
        return "(" + ",".join(_type(c) for c in param["components"]) + ")" + t[len("tuple") :]
    return t


def signatures(abi: list[dict], kind: str) -> set[str]:
    return {f"{e['name']}({','.join(_type(i) for i in e['inputs'])})" for e in abi if e.get("type") == kind}


def selector(sig: str) -> str:
    return keccak(text=sig)[:4].hex()


def topic(sig: str) -> str:
    return "0x" + keccak(text=sig).hex()


def load_abi(name: str) -> list[dict]:
    return json.loads((ABI_DIR / f"{name}.json").read_text())


@pytest.mark.parametrize("sig", sorted(ALL_SELECTORS))
def test_spec_selectors_are_keccak_of_signatures(sig):
    assert selector(sig) == ALL_SELECTORS[sig]


@pytest.mark.parametrize("sig", sorted({**CONTROLLER_EVENTS, **AMM_EVENTS}))
def test_spec_topics_are_keccak_of_signatures(sig):
    assert topic(sig) == {**CONTROLLER_EVENTS, **AMM_EVENTS}[sig]


@pytest.mark.parametrize(
    ("abi_file", "functions", "absent", "event_sigs"),
    [
        ("Controller_M2", {**CONTROLLER_COMMON, **CONTROLLER_M2_ONLY}, CONTROLLER_V3_ONLY, CONTROLLER_EVENTS),
        ("Controller_V3", {**CONTROLLER_COMMON, **CONTROLLER_V3_ONLY}, CONTROLLER_M2_ONLY, CONTROLLER_EVENTS),
        ("AMM", {s: AMM[s] for s in AMM_IN_ABI_FILE}, {}, AMM_EVENTS),
        ("ControllerFactory", CONTROLLER_FACTORY, {}, {}),
        ("LendingFactory", LENDING_FACTORY, {}, {}),
        ("Controller_Probes", PROBES, {}, {}),
    ],
)
def test_abi_files_contain_the_spec_entries(abi_file, functions, absent, event_sigs):
    abi = load_abi(abi_file)
    fsigs = signatures(abi, "function")
    assert set(functions) <= fsigs
    assert not set(absent) & fsigs
    assert {selector(s) for s in fsigs} >= set(functions.values())
    esigs = signatures(abi, "event")
    assert set(event_sigs) <= esigs
    assert {topic(s) for s in esigs} >= set(event_sigs.values())
    # every ABI entry is a real interface member the spec lists (or, for the factory, WETH())
    assert fsigs <= set(ALL_SELECTORS) | {"WETH()"}


@pytest.mark.parametrize(
    ("contract", "present", "absent"),
    [
        ("llamma/ControllerM2", {**CONTROLLER_COMMON, **CONTROLLER_M2_ONLY}, CONTROLLER_V3_ONLY),
        ("llamma/ControllerV3", {**CONTROLLER_COMMON, **CONTROLLER_V3_ONLY}, CONTROLLER_M2_ONLY),
        (
            "llamma/ControllerL0",
            {**CONTROLLER_COMMON, **CONTROLLER_M2_ONLY, "borrowed_token()": "765337b6"},
            {k: v for k, v in CONTROLLER_V3_ONLY.items() if k != "borrowed_token()"},
        ),
        (
            "llamma/ControllerL8",
            {**CONTROLLER_COMMON, "borrowed_token()": "765337b6", **{k: v for k, v in CONTROLLER_V3_ONLY.items() if "fed9" in v}},
            {
                **CONTROLLER_M2_ONLY,
                "approval(address,address)": "e1270b6e",
                "liquidate_extended(address,uint256,uint256,address,uint256[],bytes)": "d28952fc",
            },
        ),
        (
            "llamma/ControllerL9",
            {**CONTROLLER_COMMON, **{k: v for k, v in CONTROLLER_V3_ONLY.items() if k != "approval(address,address)"}},
            {**CONTROLLER_M2_ONLY, "approval(address,address)": "e1270b6e"},
        ),
        ("llamma/AMM", AMM, {}),
        ("llamma/ControllerFactory", {**CONTROLLER_FACTORY, "WETH()": selector("WETH()")}, {}),
        ("llamma/LendingFactory", LENDING_FACTORY, {}),
    ],
)
def test_compiled_contracts_expose_their_variant(contract, present, absent):
    compiled = compile_contract(contract)
    exposed = {selector(s) for s in signatures(compiled.abi, "function")}
    missing = {s for s, sel in present.items() if sel not in exposed}
    assert not missing
    extra = {s for s, sel in absent.items() if sel in exposed}
    assert not extra


@pytest.mark.parametrize(
    ("contract", "events"),
    [("llamma/ControllerM2", CONTROLLER_EVENTS), ("llamma/ControllerV3", CONTROLLER_EVENTS), ("llamma/AMM", AMM_EVENTS)],
)
def test_compiled_event_topics(contract, events):
    esigs = signatures(compile_contract(contract).abi, "event")
    assert set(events) <= esigs


def test_m2_v3_selector_sets_match_the_spec_exactly():
    m2 = {selector(s) for s in signatures(compile_contract("llamma/ControllerM2").abi, "function")}
    v3 = {selector(s) for s in signatures(compile_contract("llamma/ControllerV3").abi, "function")}
    assert {"3ecdb828", "036aed88"} <= m2 and not {"765337b6", "fed9698c", "d28952fc", "e1270b6e"} & m2
    assert {"fed9698c", "d28952fc", "765337b6", "e1270b6e"} <= v3 and not {"3ecdb828", "036aed88"} & v3
    assert "bcbaf487" in m2 and "bcbaf487" in v3


@pytest.mark.parametrize(
    "contract",
    [
        "llamma/AMM",
        "llamma/ControllerM2",
        "llamma/ControllerV3",
        "llamma/ControllerL0",
        "llamma/ControllerL8",
        "llamma/ControllerL9",
        "llamma/v0_3_10/ControllerM2",
        "llamma/v0_3_10/ControllerV3",
        "llamma/ControllerFactory",
        "llamma/LendingFactory",
        "llamma/PriceOracle",
        "llamma/WETH",
        "llamma/TestLiquidator",
    ],
)
def test_runtime_fits_eip170(contract):
    assert 0 < compile_contract(contract).runtime_size <= EIP170_LIMIT
