"""Configuration: the example parses, env overrides, and each kind of error names its field;
the CLI exits 2 with the field on stderr and no traceback."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from decimal import Decimal
from pathlib import Path

import pytest

import keeper.adapters  # noqa: F401 - registers the protocol kinds with keeper.config
from keeper.config import ConfigError, parse_config

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "config.example.toml"


def example() -> dict:
    return tomllib.loads(EXAMPLE.read_text())


def test_example_config_is_valid():
    cfg = parse_config(example(), environ={})
    assert cfg.chain.chain_id == 31337
    assert cfg.profit.min_profit == Decimal("1")
    kinds = [p.kind for p in cfg.protocols]
    assert kinds == ["perp_v1", "llamma"]


def test_env_overrides_nested_and_list_items():
    cfg = parse_config(
        example(),
        environ={
            "KEEPER__GAS__MAX_FEE_PER_GAS_GWEI": "55",
            "KEEPER__PROTOCOLS__0__MIN_PROFIT": "2.5",
            "KEEPER__CHAIN__RPC_URLS": '["http://a:1", "http://b:2"]',
        },
    )
    assert cfg.gas.max_fee_per_gas_gwei == Decimal(55)
    assert cfg.protocols[0].min_profit == Decimal("2.5")
    assert cfg.chain.rpc_urls == ["http://a:1", "http://b:2"]


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda d: d["chain"].pop("chain_id"), "chain.chain_id"),
        (lambda d: d["protocols"][0].__setitem__("clearing_house", "0x1234"), "protocols[0].clearing_house"),
        (lambda d: d["chain"].__setitem__("rpc_urls", ["localhost:8545"]), "chain.rpc_urls[0]"),
        (lambda d: d["profit"].__setitem__("min_profit", "-1"), "profit.min_profit"),
        (lambda d: d["protocols"][0].__setitem__("lockout_threshold", "1.5"), "protocols[0].lockout_threshold"),
        (lambda d: d["protocols"][0].__setitem__("kind", "nope"), "protocols[0].kind"),
        (lambda d: d["gas"].__setitem__("max_fee_per_gas_gwei", "abc"), "gas.max_fee_per_gas_gwei"),
        (lambda d: d["chain"].__setitem__("typo_field", 1), "chain.typo_field"),
        (lambda d: d["protocols"].append(dict(d["protocols"][0])), "protocols[2].name"),  # duplicate name
    ],
)
def test_errors_name_the_field(mutate, field):
    data = example()
    mutate(data)
    with pytest.raises(ConfigError) as info:
        parse_config(data, environ={})
    assert info.value.field == field


def test_env_override_errors_name_the_field():
    with pytest.raises(ConfigError) as info:
        parse_config(example(), environ={"KEEPER__PROFIT__MIN_PROFIT": "-3"})
    assert info.value.field == "profit.min_profit"


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "keeper", *args], capture_output=True, text=True, env=env, timeout=120)


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (lambda s: s.replace("chain_id = 31337", ""), "chain.chain_id"),
        (lambda s: s.replace('clearing_house = "0x1111', 'clearing_house = "0xZZ11'), "protocols[0].clearing_house"),
        (lambda s: s.replace('rpc_urls = ["http://127.0.0.1:8545"]', 'rpc_urls = ["127.0.0.1:8545"]'), "chain.rpc_urls[0]"),
        (lambda s: s.replace('min_profit = "1"', 'min_profit = "-1"'), "profit.min_profit"),
    ],
)
def test_cli_exits_2_naming_the_field(tmp_path, edit, field):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(edit(EXAMPLE.read_text()))
    for command in ("run", "check", "scan"):
        proc = run_cli("-c", str(cfg), command)
        assert proc.returncode == 2, proc.stderr
        assert field in proc.stderr
        assert "Traceback" not in proc.stderr


def test_cli_missing_file_and_bad_toml(tmp_path):
    proc = run_cli("-c", str(tmp_path / "nope.toml"), "check")
    assert proc.returncode == 2 and "not found" in proc.stderr and "Traceback" not in proc.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text("[chain\nx=1")
    proc = run_cli("-c", str(bad), "check")
    assert proc.returncode == 2 and "invalid TOML" in proc.stderr
