"""The hand-written ABIs in abis/ and the compiled reference contracts against the selectors and
topics of docs/PROTOCOLS.md §A (the real Perp v1 contracts). No chain needed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from eth_utils import keccak

from keeper.abi import Abi, abi, abi_dir, canonical_type
from keeper.devtools.compile import compile_contract

EIP170_LIMIT = 24_576

# canonical signature -> selector, as listed in docs/PROTOCOLS.md §A.2 / §A.6; value: (JSON ABI, compiled contract)
SPEC_SELECTORS: dict[str, tuple[str, str | None, str]] = {
    "liquidate(address,address)": ("86b9d81f", "perp/ClearingHouse", "perp/ClearingHouse"),
    "liquidateWithSlippage(address,address,(uint256))": ("29c44f13", "perp/ClearingHouse", "perp/ClearingHouse"),
    "getMarginRatio(address,address)": ("ea0a45f9", "perp/ClearingHouse", "perp/ClearingHouse"),
    "getPosition(address,address)": ("b33dc190", "perp/ClearingHouse", "perp/ClearingHouse"),
    "getUnadjustedPosition(address,address)": ("0475db5a", None, "perp/ClearingHouse"),
    "getPositionNotionalAndUnrealizedPnl(address,address,uint8)": ("8bedf3bb", "perp/ClearingHouse", "perp/ClearingHouse"),
    "getLatestCumulativePremiumFraction(address)": ("6891397b", "perp/ClearingHouse", "perp/ClearingHouse"),
    "maintenanceMarginRatio()": ("83acb48a", "perp/ClearingHouse", "perp/ClearingHouse"),
    "initMarginRatio()": ("e57d5636", "perp/ClearingHouse", "perp/ClearingHouse"),
    "liquidationFeeRatio()": ("cfe71103", "perp/ClearingHouse", "perp/ClearingHouse"),
    "partialLiquidationRatio()": ("090f05c2", "perp/ClearingHouse", "perp/ClearingHouse"),
    "backstopLiquidityProviderMap(address)": ("e9a4019b", "perp/ClearingHouse", "perp/ClearingHouse"),
    "insuranceFund()": ("b7902303", "perp/ClearingHouse", "perp/ClearingHouse"),
    "payFunding(address)": ("3e09fa10", "perp/ClearingHouse", "perp/ClearingHouse"),
    "openPosition(address,uint8,(uint256),(uint256),(uint256))": ("893d242d", "perp/ClearingHouse", "perp/ClearingHouse"),
    "closePosition(address,(uint256))": ("a8c1b0bc", "perp/ClearingHouse", "perp/ClearingHouse"),
    "addMargin(address,(uint256))": ("ac06a96e", "perp/ClearingHouse", "perp/ClearingHouse"),
    "removeMargin(address,(uint256))": ("30e2ae65", "perp/ClearingHouse", "perp/ClearingHouse"),
    "getAllAmms()": ("b7538c62", "perp/InsuranceFund", "perp/InsuranceFund"),
    "isExistedAmm(address)": ("0774a784", "perp/InsuranceFund", "perp/InsuranceFund"),
    "getOutputPrice(uint8,(uint256))": ("da0c5927", "perp/Amm", "perp/Amm"),
    "getInputPrice(uint8,(uint256))": ("e1f1027f", "perp/Amm", "perp/Amm"),
    "getSpotPrice()": ("dc76fabc", "perp/Amm", "perp/Amm"),
    "getReserve()": ("59bf5d39", "perp/Amm", "perp/Amm"),
    "reserveSnapshots(uint256)": ("21e00985", "perp/Amm", "perp/Amm"),
    "getSnapshotLen()": ("0d451c8f", "perp/Amm", "perp/Amm"),
    "getOutputTwap(uint8,(uint256))": ("6fa42ede", "perp/Amm", "perp/Amm"),
    "getInputTwap(uint8,(uint256))": ("4894d183", "perp/Amm", "perp/Amm"),
    "getTwapPrice(uint256)": ("f1b5df86", "perp/Amm", "perp/Amm"),
    "getUnderlyingPrice()": ("468f02d2", "perp/Amm", "perp/Amm"),
    "isOverSpreadLimit()": ("9e010362", "perp/Amm", "perp/Amm"),
    "isOverFluctuationLimit(uint8,(uint256))": ("130234cf", "perp/Amm", "perp/Amm"),
    "getPrice(bytes32)": ("31d98b3f", None, "perp/PriceFeed"),
}

# topic0 values given in full in §A.3
SPEC_TOPICS = {
    "PositionChanged(address,address,uint256,uint256,int256,uint256,int256,int256,int256,uint256,uint256,uint256,int256)": "0x4c7b764f428c13bbea8cc8da90ebe6eef4dafeb27a4e3d9041d64208c47ca7c2",
    "PositionLiquidated(address,address,uint256,uint256,uint256,address,uint256)": "0x5225638a979dd133f201045ab4169ec2189874d864f2b5a10be72ac6e4b421b4",
}

# events of §A.3: (JSON ABI, compiled contract, signature, indexed flags)
SPEC_EVENTS = [
    (
        "perp/ClearingHouse",
        "perp/ClearingHouse",
        "PositionChanged(address,address,uint256,uint256,int256,uint256,int256,int256,int256,uint256,uint256,uint256,int256)",
        (True, True) + (False,) * 11,
    ),
    (
        "perp/ClearingHouse",
        "perp/ClearingHouse",
        "PositionLiquidated(address,address,uint256,uint256,uint256,address,uint256)",
        (True, True, False, False, False, False, False),
    ),
    ("perp/ClearingHouse", "perp/ClearingHouse", "MarginChanged(address,address,int256,int256)", (True, True, False, False)),
    ("perp/ClearingHouse", "perp/ClearingHouse", "RestrictionModeEntered(address,uint256)", (False, False)),
    ("perp/ClearingHouse", "perp/ClearingHouse", "PositionSettled(address,address,uint256)", (True, True, False)),
    ("perp/Amm", "perp/Amm", "SwapInput(uint8,uint256,uint256)", (False, False, False)),
    ("perp/Amm", "perp/Amm", "SwapOutput(uint8,uint256,uint256)", (False, False, False)),
    ("perp/Amm", "perp/Amm", "ReserveSnapshotted(uint256,uint256,uint256)", (False, False, False)),
]

# JSON ABI -> compiled reference contract implementing it
ABI_IMPLEMENTATIONS = {
    "perp/ClearingHouse": "perp/ClearingHouse",
    "perp/Amm": "perp/Amm",
    "perp/InsuranceFund": "perp/InsuranceFund",
    "common/ERC20": "common/ERC20",
    "common/Multicall3": "common/Multicall3",
    "common/ChainlinkAggregator": "common/ChainlinkAggregator",
}

DEPLOYABLE_PERP = ["perp/Amm", "perp/ClearingHouse", "perp/ClearingHouseV22", "perp/InsuranceFund", "perp/PriceFeed"]


def signature(entry: dict) -> str:
    return f"{entry['name']}({','.join(canonical_type(p) for p in entry.get('inputs', []))})"


def entries(raw_abi: list[dict], kind: str) -> dict[str, dict]:
    return {signature(e): e for e in raw_abi if e.get("type") == kind}


def abi_of(raw: list[dict]) -> Abi:
    return Abi("compiled", raw)


def json_abi(name: str) -> list[dict]:
    return json.loads((abi_dir() / f"{name}.json").read_text())


def selector(sig: str) -> str:
    return keccak(text=sig)[:4].hex()


@pytest.mark.parametrize("sig", sorted(SPEC_SELECTORS))
def test_spec_selector_is_keccak_of_signature(sig):
    assert selector(sig) == SPEC_SELECTORS[sig][0]


@pytest.mark.parametrize("sig", sorted(s for s, v in SPEC_SELECTORS.items() if v[1]))
def test_spec_selector_in_json_abi(sig):
    sel, json_name, _ = SPEC_SELECTORS[sig]
    fns = {f.selector.hex(): f.signature for f in abi(json_name).functions()}
    assert fns.get(sel) == sig


@pytest.mark.parametrize("sig", sorted(SPEC_SELECTORS))
def test_compiled_contract_exposes_spec_selector(sig):
    sel, _, contract = SPEC_SELECTORS[sig]
    compiled = compile_contract(contract)
    assert sig in entries(compiled.abi, "function")
    assert {f.selector.hex() for f in abi_of(compiled.abi).functions()} >= {sel}


@pytest.mark.parametrize("sig", sorted(SPEC_TOPICS))
def test_spec_topics(sig):
    assert "0x" + keccak(text=sig).hex() == SPEC_TOPICS[sig]
    assert abi("perp/ClearingHouse").event(sig.split("(")[0]).topic0 == SPEC_TOPICS[sig]


@pytest.mark.parametrize("json_name,contract,sig,indexed", SPEC_EVENTS, ids=[e[2].split("(")[0] for e in SPEC_EVENTS])
def test_spec_events_in_json_and_compiled(json_name, contract, sig, indexed):
    for raw in (json_abi(json_name), compile_contract(contract).abi):
        ev = entries(raw, "event")[sig]
        assert tuple(bool(p.get("indexed")) for p in ev["inputs"]) == indexed
    assert abi(json_name).event(sig.split("(")[0]).signature == sig


@pytest.mark.parametrize("json_name", sorted(ABI_IMPLEMENTATIONS))
def test_json_abi_matches_compiled_contract(json_name):
    """Every function and event of the hand-written ABI exists in the reference contract with the
    same canonical inputs, outputs, mutability class and indexed flags (and, for perp events, the
    same field names; the common ERC20's Transfer fields are named differently, not typed)."""
    compiled = compile_contract(ABI_IMPLEMENTATIONS[json_name]).abi
    theirs_fns, ours_fns = entries(json_abi(json_name), "function"), entries(compiled, "function")
    for sig, e in theirs_fns.items():
        assert sig in ours_fns, f"{json_name}: {sig} missing from {ABI_IMPLEMENTATIONS[json_name]}"
        mine = ours_fns[sig]
        assert [canonical_type(p) for p in e["outputs"]] == [canonical_type(p) for p in mine["outputs"]], sig
        assert (e["stateMutability"] in ("view", "pure")) == (mine["stateMutability"] in ("view", "pure")), sig
    theirs_ev, ours_ev = entries(json_abi(json_name), "event"), entries(compiled, "event")
    for sig, e in theirs_ev.items():
        assert sig in ours_ev, f"{json_name}: event {sig} missing"
        named = json_name.startswith("perp/")
        assert [(p["name"] if named else "", bool(p["indexed"])) for p in e["inputs"]] == [
            (p["name"] if named else "", bool(p["indexed"])) for p in ours_ev[sig]["inputs"]
        ]


def test_decimal_types_are_one_field_tuples_named_d():
    for name in ("perp/ClearingHouse", "perp/Amm"):
        for e in json_abi(name):
            for p in e.get("inputs", []) + e.get("outputs", []):
                if (
                    p["type"] == "tuple"
                    and all(c["type"] in ("uint256", "int256") for c in p["components"])
                    and len(p["components"]) == 1
                ):
                    assert p["components"][0]["name"] == "d"


def test_bare_ratio_getters():
    """Public Decimal state getters return a bare uint256 (§A.1), not a tuple."""
    ch = {f.name: f for f in abi("perp/ClearingHouse").functions()}
    amm = {f.name: f for f in abi("perp/Amm").functions()}
    for f in ("maintenanceMarginRatio", "initMarginRatio", "liquidationFeeRatio", "partialLiquidationRatio"):
        assert ch[f].output_types == ("uint256",)
    for f in ("quoteAssetReserve", "baseAssetReserve", "tradeLimitRatio", "fluctuationLimitRatio"):
        assert amm[f].output_types == ("uint256",)
    assert ch["getPosition"].output_types == ("((int256),(uint256),(uint256),(int256),uint256,uint256)",)
    assert ch["liquidate"].output_types == ("(uint256)", "bool")


def test_v22_variant_lacks_liquidate_with_slippage():
    v23, v22 = compile_contract("perp/ClearingHouse"), compile_contract("perp/ClearingHouseV22")
    assert set(entries(v23.abi, "function")) - set(entries(v22.abi, "function")) == {
        "liquidateWithSlippage(address,address,(uint256))"
    }
    assert entries(v23.abi, "event") == entries(v22.abi, "event")


@pytest.mark.parametrize("contract", DEPLOYABLE_PERP)
def test_runtime_code_fits_eip170(contract):
    assert 0 < compile_contract(contract).runtime_size <= EIP170_LIMIT


def test_no_production_code_reads_a_test_only_abi():
    """The reference contract's lockout switch is not part of the upstream interface: no JSON ABI
    describes it and keeper/ code does not load one (lockout = "auto" probes for it inline)."""
    import keeper  # noqa: PLC0415

    assert not (abi_dir() / "perp" / "ReferenceExtensions.json").exists()
    root = Path(keeper.__file__).parent
    offenders = [p for p in root.rglob("*.py") if "ReferenceExtensions" in p.read_text()]
    assert offenders == []
    assert "lockoutRatio" not in {f.name for f in abi("perp/ClearingHouse").functions()}
