"""Every config mistake is exit 2 naming the field, with no traceback and no file created:
[pricing] required (no silent default), prices > 0, at least one enabled protocol, EIP-55
checksums, overrides of unlisted markets, http.listen and state.path. Plus what is accepted,
`config-help`'s human types per protocol kind, and config.py not importing the adapters."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import keeper.config as config_module
from keeper.cli import main
from keeper.config import ConfigError, parse_config
from keeper.devtools.configfile import to_toml

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "config.example.toml"
CH = "0x5d9593586b4B5edBd23E7Eba8d88FD8F09D83EBd"  # the example's clearing_house (valid EIP-55)
AMM = "0x8d22F1a9dCe724D8c1B4c688D75f17A2fE2D32df"  # valid EIP-55
OTHER = "0x1111111111111111111111111111111111111111"


def example() -> dict:
    return tomllib.loads(EXAMPLE.read_text())


def _flip_case(address: str) -> str:
    """The same address with one letter's case flipped: a typo its EIP-55 checksum catches."""
    i = next(i for i, c in enumerate(address) if i > 1 and c.isalpha())
    return address[:i] + address[i].swapcase() + address[i + 1 :]


def _set(path: str, value):
    def edit(d: dict) -> None:
        *parents, last = path.split(".")
        node = d
        for p in parents:
            node = node[int(p)] if p.isdigit() else node[p]
        node[int(last) if last.isdigit() else last] = value

    return edit


def _drop(key: str):
    return lambda d: d.pop(key)


def _disable_all(d: dict) -> None:
    for p in d["protocols"]:
        p["enabled"] = False


def _state_is_a_directory(d: dict, tmp: Path) -> None:
    (tmp / "statedir").mkdir()
    d["state"]["path"] = str(tmp / "statedir")


def _state_parent_is_a_file(d: dict, tmp: Path) -> None:
    (tmp / "afile").write_text("x")
    d["state"]["path"] = str(tmp / "afile" / "keeper.sqlite")


CASES = {
    "missing pricing": (_drop("pricing"), "pricing"),
    "zero price": (_set("pricing.value", "0"), "pricing.value"),
    "negative price": (_set("pricing.value", "-3000"), "pricing.value"),
    "zero native_price": (_set("protocols.1.native_price", {"source": "fixed", "value": "0"}), "protocols[1].native_price.value"),
    "no protocols": (_set("protocols", []), "protocols"),
    "no enabled protocol": (_disable_all, "protocols"),
    "bad checksum": (_set("protocols.0.clearing_house", _flip_case(CH)), "protocols[0].clearing_house"),
    "bad checksum in a list": (_set("protocols.0.markets", [AMM, _flip_case(AMM)]), "protocols[0].markets[1]"),
    "bad checksum in pricing.feed": (
        _set("pricing", {"source": "chainlink", "feed": _flip_case(AMM)}),
        "pricing.feed",
    ),
    "bad checksum in an override key": (
        _set("protocols.0.market_overrides", {_flip_case(AMM): {"min_profit": "5"}}),
        f"protocols[0].market_overrides.{_flip_case(AMM)}",
    ),
    "override of an unlisted market": (
        lambda d: d["protocols"][0].update(markets=[AMM], market_overrides={OTHER: {"min_profit": "5"}}),
        f"protocols[0].market_overrides.{OTHER}",
    ),
    "listen without port": (_set("http.listen", "localhost"), "http.listen"),
    "listen port > 65535": (_set("http.listen", "127.0.0.1:65536"), "http.listen"),
    "listen port 0": (_set("http.listen", "127.0.0.1:0"), "http.listen"),
    "listen port not a number": (_set("http.listen", "127.0.0.1:http"), "http.listen"),
    "listen host unresolvable": (_set("http.listen", "no-such-host.invalid:9108"), "http.listen"),
    "state path is a directory": (_state_is_a_directory, "state.path"),
    "state path parent is a file": (_state_parent_is_a_file, "state.path"),
}


def _apply(edit, data: dict, tmp: Path) -> None:
    if edit in (_state_is_a_directory, _state_parent_is_a_file):
        edit(data, tmp)
    else:
        edit(data)


@pytest.mark.parametrize("case", list(CASES))
def test_parse_names_the_field(case, tmp_path):
    edit, field = CASES[case]
    data = example()
    _apply(edit, data, tmp_path)
    with pytest.raises(ConfigError) as info:
        parse_config(data, environ={})
    assert info.value.field == field, info.value


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("command", ["check", "scan", "run"])
def test_cli_exits_2_naming_the_field_and_creates_nothing(case, command, tmp_path, monkeypatch, capsys):
    edit, field = CASES[case]
    data = example()
    _apply(edit, data, tmp_path)
    monkeypatch.chdir(tmp_path)  # the example's relative state.path would land here
    cfg = tmp_path / "bad.toml"
    cfg.write_text(to_toml(data))
    before = sorted(tmp_path.rglob("*"))
    assert main(["-c", str(cfg), command]) == 2
    err = capsys.readouterr().err
    assert field in err and "Traceback" not in err
    assert sorted(tmp_path.rglob("*")) == before


def test_subprocess_exit_2_no_traceback(tmp_path):
    data = example()
    data["http"]["listen"] = "localhost"
    data["state"]["path"] = str(tmp_path / "s.sqlite")
    cfg = tmp_path / "bad.toml"
    cfg.write_text(to_toml(data))
    proc = subprocess.run(
        [sys.executable, "-m", "keeper", "-c", str(cfg), "check"], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert proc.returncode == 2, proc.stderr
    assert "http.listen" in proc.stderr and "Traceback" not in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.toml"]


def test_state_folder_not_writable(tmp_path, monkeypatch):
    data = example()
    data["state"]["path"] = str(tmp_path / "ro" / "keeper.sqlite")
    (tmp_path / "ro").mkdir()
    monkeypatch.setattr(config_module, "_writable_dir", lambda d: d != tmp_path / "ro")
    with pytest.raises(ConfigError) as info:
        parse_config(data, environ={})
    assert info.value.field == "state.path" and "not writable" in info.value.message


def test_accepted_forms(tmp_path):
    data = example()
    del data["pricing"]  # every enabled protocol prices its own gas token instead
    data["protocols"][0]["native_price"] = {"source": "fixed", "value": "1"}
    data["protocols"][1]["native_price"] = {"source": "fixed", "value": "3000"}
    data["protocols"].append({"kind": "perp_v1", "name": "off", "clearing_house": CH, "enabled": False})
    data["protocols"][0]["clearing_house"] = CH.lower()
    data["protocols"][0]["markets"] = ["0x" + AMM[2:].upper(), OTHER]
    data["protocols"][0]["market_overrides"] = {AMM.lower(): {"min_profit": "5"}}
    data["http"]["listen"] = "[::1]:9108"
    nested = tmp_path / "a" / "b" / "keeper.sqlite"
    data["state"]["path"] = str(nested)
    cfg = parse_config(data, environ={})
    assert cfg.pricing is None
    assert cfg.price_source(cfg.protocols[0]).value == 1
    assert cfg.protocols[0].clearing_house == CH  # normalised to the checksum form
    assert cfg.protocols[0].markets[0] == AMM
    assert cfg.http.listen == "::1:9108"  # readers split host and port at the last colon
    assert not (tmp_path / "a").exists()  # validation creates nothing; the daemon creates the folders
    for listen, expected in (("localhost:9108", "localhost:9108"), ("", None), ("0.0.0.0:1", "0.0.0.0:1")):
        data["http"]["listen"] = listen
        assert parse_config(data, environ={}).http.listen == expected


def test_config_help_lists_protocol_fields_per_kind_with_human_types():
    proc = subprocess.run([sys.executable, "-m", "keeper", "config-help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert '[[protocols]] kind = "perp_v1"' in out and '[[protocols]] kind = "llamma"' in out
    perp = out.split('kind = "perp_v1"')[1].split("[[protocols]]")[0]
    llamma = out.split('kind = "llamma"')[1].split("[[protocols]]")[0]

    def type_of(section: str, name: str) -> str:
        line = next(ln for ln in section.splitlines() if ln.split() and ln.split()[0] == name)
        return line[len(line.split(name, 1)[0]) + len(name) :].strip()

    assert type_of(perp, "clearing_house").startswith("address ")
    assert type_of(perp, "markets").startswith("list of address ")
    assert type_of(perp, "lockout").startswith("'")
    assert {"'on'", "'off'", "'auto'"} <= set(type_of(perp, "lockout").split())
    assert type_of(perp, "min_profit").startswith("decimal ≥ 0 (quote token)")
    assert type_of(llamma, "controllers").startswith("list of address ")
    assert type_of(out, "pricing.value").startswith("decimal > 0 (quote token per native token)")
    assert type_of(out, "gas.max_fee_per_gas_gwei").startswith("decimal ≥ 0 (gwei)")
    assert type_of(out, "http.listen").startswith("host:port")
    for raw in ("typing.", "Annotated", "<class", "Decimal(", "NoneType", "PosixPath"):
        assert raw not in out, raw


def test_config_does_not_import_the_adapters():
    tree = ast.parse(Path(config_module.__file__).read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)} | {
        a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names
    }
    assert not any(m and m.startswith("keeper.adapters") for m in imported), imported
    code = (
        "import sys, tomllib; from keeper.config import parse_config\n"
        "from keeper.config import ProtocolConfig\n"
        "class Toy(ProtocolConfig):\n    pass\n"
        f"d = tomllib.loads(open({str(EXAMPLE)!r}).read())\n"
        "d['protocols'] = [{'kind': 'toy', 'name': 't'}]\n"
        "cfg = parse_config(d, environ={}, kinds={'toy': Toy})\n"
        "assert 'keeper.adapters' not in sys.modules, 'adapters imported'\n"
        "print(cfg.protocols[0].kind)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "toy"
