"""Presets for real deployments (`[[protocols]] preset = "NAME"`, keeper/presets.py) and the example files:
every file under examples/ and config.example.toml validates and is coherent (no preset's address under
another chain id); a preset fills addresses, start block, name, chain id and the gas-price feed, and every
key written beside it overrides it; the preset data are checksummed addresses on consistent chains; an
unknown preset or a wrong chain id is exit 2 naming the field."""

from __future__ import annotations

import tomllib
from decimal import Decimal
from pathlib import Path

import pytest
from eth_utils import is_checksum_address

import keeper.adapters  # noqa: F401 - registers the protocol kinds with keeper.config
from keeper.cli import main
from keeper.config import ConfigError, load_config, parse_config, protocol_kinds
from keeper.devtools.configfile import to_toml
from keeper.presets import PRESETS, preset

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.toml"))
CHAINS = {"ethereum": 1, "arbitrum": 42161, "xdai": 100}
ADDRESS_KEYS = ("clearing_house", "factory")


def minimal(**protocol) -> dict:
    return {"chain": {"rpc_urls": ["http://127.0.0.1:8545"]}, "state": {"path": ":memory:"}, "protocols": [protocol]}


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative state.path values are checked against the working directory


def test_one_example_per_preset_plus_a_local_one():
    names = {p.stem for p in EXAMPLES}
    assert set(PRESETS) <= names
    assert "local-anvil" in names


@pytest.mark.parametrize("path", [*EXAMPLES, ROOT / "config.example.toml"], ids=lambda p: p.name)
def test_every_example_validates_and_is_coherent(path):
    cfg = load_config(path, environ={})
    assert cfg.protocols and all(p.enabled for p in cfg.protocols)
    data = tomllib.loads(path.read_text())
    for i, (raw, proto) in enumerate(zip(data["protocols"], cfg.protocols, strict=True)):
        assert cfg.price_source(proto) is not None
        if "preset" in raw:
            p = PRESETS[raw["preset"]]
            assert cfg.chain.chain_id == p.chain_id, f"protocols[{i}]"
            for key, value in p.protocol.items():
                if key not in raw:
                    assert getattr(proto, key) == value, (path.name, key)
        # the reported incoherence: a real deployment's address under another chain's id
        for key in ADDRESS_KEYS:
            address = getattr(proto, key, None)
            for p in PRESETS.values():
                if address is not None and address == p.protocol.get(key):
                    assert cfg.chain.chain_id == p.chain_id, f"{path.name}: {key} of {p.name} under chain id {cfg.chain.chain_id}"


def test_preset_fills_everything_and_the_chain_id():
    cfg = parse_config(minimal(preset="llamalend-arbitrum"), environ={})
    proto = cfg.protocols[0]
    assert cfg.chain.chain_id == 42161  # filled in from the preset
    assert proto.kind == "llamma" and proto.name == "llamalend-arbitrum" and proto.preset == "llamalend-arbitrum"
    assert proto.factory == "0xcaEC110C784c9DF37240a8Ce096D352A75922DeA"
    assert proto.start_block == 193_652_535
    source = cfg.price_source(proto)
    assert source.source == "chainlink" and source.feed == PRESETS["llamalend-arbitrum"].native_price["feed"]


def test_preset_with_overrides_keeps_the_overrides():
    own_factory = "0x1111111111111111111111111111111111111111"
    data = minimal(
        preset="crvusd-ethereum",
        name="mine",
        factory=own_factory,
        start_block=20_000_000,
        min_profit="7",
        native_price={"source": "fixed", "value": "2500"},
    )
    data["chain"]["chain_id"] = 1
    cfg = parse_config(data, environ={})
    proto = cfg.protocols[0]
    assert (proto.name, proto.factory, proto.start_block, proto.min_profit) == ("mine", own_factory, 20_000_000, Decimal(7))
    assert cfg.price_source(proto).source == "fixed" and cfg.price_source(proto).value == Decimal(2500)
    assert proto.kind == "llamma"  # not overridden: from the preset
    # the environment overrides a preset's value too
    cfg = parse_config(minimal(preset="perp-v1-xdai"), environ={"KEEPER__PROTOCOLS__0__START_BLOCK": "42"})
    assert cfg.protocols[0].start_block == 42 and cfg.chain.chain_id == 100


def test_pricing_section_wins_over_the_presets_native_price():
    data = minimal(preset="perp-v1-xdai")
    data["pricing"] = {"source": "fixed", "value": "1.01"}
    cfg = parse_config(data, environ={})
    assert cfg.protocols[0].native_price is None
    assert cfg.price_source(cfg.protocols[0]).value == Decimal("1.01")
    # without [pricing], the preset's: xDAI at 1 USDC
    cfg = parse_config(minimal(preset="perp-v1-xdai"), environ={})
    assert cfg.price_source(cfg.protocols[0]).value == Decimal(1)


def test_two_presets_on_one_chain():
    data = minimal(preset="crvusd-ethereum")
    data["protocols"].append({"preset": "llamalend-ethereum", "min_profit": "3"})
    cfg = parse_config(data, environ={})
    assert [p.name for p in cfg.protocols] == ["crvusd-ethereum", "llamalend-ethereum"]
    assert cfg.chain.chain_id == 1


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_data_are_checksummed_and_chain_consistent(name):
    p = preset(name)
    assert p.name == name and p.description
    chain = name.rsplit("-", 1)[1]
    assert p.chain_id == CHAINS[chain]
    addresses = [v for k, v in p.protocol.items() if k in ADDRESS_KEYS]
    addresses += [p.native_price["feed"]] if p.native_price.get("source") == "chainlink" else []
    addresses += [p.stablecoin] if p.stablecoin else []
    assert addresses and all(is_checksum_address(a) for a in addresses), addresses
    assert p.protocol["kind"] in protocol_kinds()
    assert isinstance(p.protocol["start_block"], int) and p.protocol["start_block"] >= 0
    # presets on the same chain share its gas-price source and its stablecoin
    for other in PRESETS.values():
        if other.chain_id == p.chain_id:
            assert (other.native_price, other.stablecoin) == (p.native_price, p.stablecoin)
    # the preset alone is a valid protocol section of its kind
    parse_config(minimal(preset=name), environ={})


def test_unknown_preset_names_the_field_and_lists_the_known_ones():
    with pytest.raises(ConfigError) as info:
        parse_config(minimal(preset="crvusd-etherium"), environ={})
    assert info.value.field == "protocols[0].preset"
    assert all(name in info.value.message for name in PRESETS)
    with pytest.raises(ConfigError) as info:
        parse_config(minimal(preset="perp-v1-xdai", kind="llamma"), environ={})
    assert info.value.field == "protocols[0].kind"


def _check(tmp_path: Path, data: dict, capsys) -> tuple[int, str]:
    path = tmp_path / "keeper.toml"
    path.write_text(to_toml(data))
    code = main(["-c", str(path), "check"])
    return code, capsys.readouterr().err


def test_cli_unknown_preset_is_exit_2_naming_the_field(tmp_path, capsys):
    code, err = _check(tmp_path, minimal(preset="nope"), capsys)
    assert code == 2
    assert "protocols[0].preset" in err and "crvusd-ethereum" in err and "Traceback" not in err


def test_cli_wrong_chain_id_is_exit_2_naming_the_preset(tmp_path, capsys):
    data = tomllib.loads((ROOT / "examples" / "perp-v1-xdai.toml").read_text())
    data["chain"]["chain_id"] = 31337
    data["protocols"].insert(0, {"kind": "llamma", "name": "local", "factory": "0x2222222222222222222222222222222222222222"})
    code, err = _check(tmp_path, data, capsys)
    assert code == 2
    assert "protocols[1].preset" in err and "100" in err and "31337" in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keeper.toml"]  # nothing created


def test_first_come_first_served_l2_preset_tips_zero():
    """Arbitrum's sequencer orders first come, first served: its preset's [gas] defaults are tip 0 and no
    outbidding; the file's own [gas] keys win; presets of other chains leave [gas] alone."""
    from keeper.config import GasConfig
    from keeper.presets import apply_gas_defaults

    arb = PRESETS["llamalend-arbitrum"]
    assert arb.gas["priority_fee_gwei"] == "0" and arb.gas["outbid"] is False
    data: dict = {}
    apply_gas_defaults(data, [arb])
    gas = GasConfig.model_validate(data["gas"])
    assert gas.priority_fee_gwei == 0 and gas.tip_policy == "fixed" and gas.outbid is False
    data = {"gas": {"priority_fee_gwei": "0.01", "max_fee_per_gas_gwei": "1"}}
    apply_gas_defaults(data, [arb])
    assert data["gas"] == {"priority_fee_gwei": "0.01", "max_fee_per_gas_gwei": "1", "tip_policy": "fixed", "outbid": False}
    for name in ("crvusd-ethereum", "llamalend-ethereum", "perp-v1-xdai"):  # tips buy inclusion order there
        data = {}
        apply_gas_defaults(data, [PRESETS[name]])
        assert data == {}
