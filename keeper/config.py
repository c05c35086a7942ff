"""The keeper's configuration: one place per setting — default, env override, validation, help.

Sources, later wins: the TOML file, then environment variables `KEEPER__SECTION__FIELD=value`
(nested with double underscores, list items by index: `KEEPER__PROTOCOLS__0__MIN_PROFIT=2.5`;
JSON values for lists). Every field's `description` is its help text (`keeper config-help`).

Amounts are human decimal strings in the unit named by the field (quote token, gwei, ...) and are
converted to exact integers where they are used. Protocol facts (ratios, fees, decimals) are never
configured: adapters read them on-chain; configuration only sets policy.
"""

from __future__ import annotations

import json
import os
import tomllib
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

from eth_utils import is_address, to_checksum_address
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from keeper.units import to_decimal

ENV_PREFIX = "KEEPER__"


class ConfigError(Exception):
    """Invalid configuration; `field` is the dotted path of the offending setting."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.message = message


# ---- field types ---------------------------------------------------------------------------------


def _address(v: str) -> str:
    if not isinstance(v, str) or not is_address(v) or not v.startswith("0x"):
        raise ValueError("not a valid 0x-prefixed 20-byte address")
    return to_checksum_address(v)


def _url(schemes: tuple[str, ...]):
    def check(v: str) -> str:
        if not isinstance(v, str) or "://" not in v:
            raise ValueError(f"not a URL (expected {'/'.join(schemes)}://host:port)")
        scheme, rest = v.split("://", 1)
        if scheme not in schemes or not rest or rest.startswith("/"):
            raise ValueError(f"not a valid {'/'.join(schemes)} URL: {v!r}")
        return v

    return check


def _non_negative(v: Decimal) -> Decimal:
    if v < 0:
        raise ValueError("must be ≥ 0")
    return v


def _ratio(v: Decimal) -> Decimal:
    if not (0 <= v <= 1):
        raise ValueError("must be between 0 and 1")
    return v


Address = Annotated[str, AfterValidator(_address)]
HttpUrl = Annotated[str, AfterValidator(_url(("http", "https")))]
WsUrl = Annotated[str, AfterValidator(_url(("ws", "wss")))]
Dec = Annotated[Decimal, BeforeValidator(to_decimal)]
NonNegDec = Annotated[Decimal, BeforeValidator(to_decimal), AfterValidator(_non_negative)]
Ratio = Annotated[Decimal, BeforeValidator(to_decimal), AfterValidator(_ratio)]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ---- sections --------------------------------------------------------------------------------------


class ChainConfig(Model):
    rpc_urls: list[HttpUrl] = Field(
        min_length=1,
        description="JSON-RPC HTTP endpoints in priority order; the keeper fails over between them.",
    )
    ws_url: WsUrl | None = Field(None, description="Websocket endpoint for newHeads; polling is the fallback.")
    chain_id: int = Field(gt=0, description="Expected chain id; the keeper refuses to start on any other chain.")
    poll_interval: float = Field(1.0, gt=0, description="Seconds between head polls when not subscribed.")
    request_timeout: float = Field(10.0, gt=0, description="Timeout in seconds for every RPC request.")
    max_retries: int = Field(3, ge=0, le=20, description="Retries per request (across endpoints) on transport errors.")
    stale_head_after: float = Field(
        60.0, gt=0, description="Seconds without a new block before the endpoint is considered stale."
    )
    log_page_size: int = Field(2000, ge=1, le=1_000_000, description="Blocks per eth_getLogs page while indexing.")
    batch_size: int = Field(100, ge=1, le=1000, description="Calls per Multicall3 aggregate / JSON-RPC batch.")
    multicall: Literal["auto", "off"] | Address = Field(
        "auto",
        description="'auto': use Multicall3 at its canonical address when it has code; 'off': JSON-RPC batches; "
        "or the address of a Multicall3-compatible aggregator.",
    )


class KeyConfig(Model):
    private_key_env: str | None = Field(
        "KEEPER_PRIVATE_KEY", description="Name of the env var holding the hex private key (used when no keystore)."
    )
    keystore: Path | None = Field(None, description="Encrypted JSON keystore (eth-account); needs password_file.")
    password_file: Path | None = Field(None, description="File with the keystore password; must not be readable by others.")
    address: Address | None = Field(None, description="Expected keeper address; startup fails if the key differs.")

    @model_validator(mode="after")
    def _keystore_needs_password(self) -> KeyConfig:
        if self.keystore is not None and self.password_file is None:
            raise ValueError("password_file is required with keystore")
        if self.keystore is None and not self.private_key_env:
            raise ValueError("set keystore (+ password_file) or private_key_env")
        return self


class GasConfig(Model):
    max_fee_per_gas_gwei: NonNegDec = Field(
        Decimal(200), description="Hard cap on maxFeePerGas (gwei); above it the keeper waits instead of sending."
    )
    priority_fee_gwei: NonNegDec = Field(Decimal(1), description="Tip offered per gas (gwei).")
    max_priority_fee_gwei: NonNegDec = Field(Decimal(5), description="Hard cap on the tip, replacements included (gwei).")
    base_fee_multiplier: Dec = Field(
        Decimal(2), ge=1, description="maxFeePerGas = min(cap, next base fee × this + tip): headroom for rising base fees."
    )
    gas_limit_multiplier: Dec = Field(
        Decimal("1.3"), ge=1, description="Gas limit = simulated gas × this + gas_limit_extra (out-of-gas loses money)."
    )
    gas_limit_extra: int = Field(30_000, ge=0, description="Gas added to the padded estimate.")
    max_gas_limit: int = Field(3_000_000, gt=21_000, description="Never send a transaction with a higher gas limit.")

    @model_validator(mode="after")
    def _tip_under_caps(self) -> GasConfig:
        if self.priority_fee_gwei > self.max_priority_fee_gwei:
            raise ValueError("priority_fee_gwei exceeds max_priority_fee_gwei")
        if self.max_priority_fee_gwei > self.max_fee_per_gas_gwei:
            raise ValueError("max_priority_fee_gwei exceeds max_fee_per_gas_gwei")
        return self


class PriceSourceConfig(Model):
    source: Literal["fixed", "chainlink"] = Field(
        "fixed", description="'fixed': `value`; 'chainlink': AggregatorV3 `feed` (latestRoundData)."
    )
    value: NonNegDec | None = Field(None, description="Fixed price of 1 native token in quote-token units.")
    feed: Address | None = Field(None, description="Chainlink-compatible aggregator giving the native token's quote price.")
    max_age: float = Field(3600.0, gt=0, description="Seconds after which a feed answer is stale (then no sends).")

    @model_validator(mode="after")
    def _complete(self) -> PriceSourceConfig:
        if self.source == "fixed" and self.value is None:
            raise ValueError("value is required for source = 'fixed'")
        if self.source == "chainlink" and self.feed is None:
            raise ValueError("feed is required for source = 'chainlink'")
        return self


class ProfitConfig(Model):
    min_profit: NonNegDec = Field(
        Decimal(0), description="Send only if reward − gas cost ≥ this, in the market's quote token (per-protocol/market overrides)."
    )
    allow_unprofitable: bool = Field(
        False, description="Opt in to sending liquidations whose expected profit is below min_profit (never by default)."
    )


class TxConfig(Model):
    replace_after_blocks: int = Field(3, ge=1, description="A transaction not mined after this many blocks is replaced.")
    fee_bump: Dec = Field(Decimal("1.125"), ge=Decimal("1.1"), description="Fee multiplier per replacement (≥ 1.1, nodes require +10 %).")
    max_replacements: int = Field(5, ge=0, description="Replacements before the keeper cancels (self-transfer at that nonce).")
    max_in_flight_per_market: int | None = Field(
        None, ge=1, description="Liquidations in flight per market at once; default per protocol (perp 1: each one "
        "moves the vAMM; LLAMMA 8: independent)."
    )
    failure_cooldown_blocks: int = Field(
        5, ge=0, description="After a reverted or failed liquidation, blocks to wait before re-trying that position."
    )


class StateConfig(Model):
    path: Path = Field(Path("keeper.sqlite"), description="SQLite file for the index cursor, positions and tx journal.")


class HttpConfig(Model):
    listen: str | None = Field("127.0.0.1:9108", description="host:port for /health and /metrics; empty to disable.")


class AlertsConfig(Model):
    webhook_url: HttpUrl | None = Field(None, description="JSON POST target for alerts (unhealthy, low balance, failed sends).")
    min_balance_eth: NonNegDec = Field(Decimal("0.05"), description="Alert and report unhealthy below this native balance.")
    repeat_after: float = Field(
        600.0, ge=0, description="Seconds before the same alert (kind and subject) is POSTed again; 0 sends every one."
    )


class LogConfig(Model):
    level: Literal["debug", "info", "warning", "error"] = Field("info", description="Log level.")
    format: Literal["auto", "json", "console"] = Field("auto", description="'auto': JSON unless stderr is a terminal.")


class ProtocolConfig(Model):
    """Fields every protocol section has; adapters extend it with their own."""

    kind: str = Field(description="Adapter kind, e.g. 'perp_v1' or 'llamma'.")
    name: str = Field(min_length=1, max_length=40, pattern=r"^[A-Za-z0-9_.-]+$", description="Label used in logs and metrics.")
    enabled: bool = Field(True, description="Set false to keep a section in the file without running it.")
    start_block: int = Field(0, ge=0, description="First block to index events from.")
    min_profit: NonNegDec | None = Field(None, description="Overrides profit.min_profit for this protocol (quote units).")
    native_price: PriceSourceConfig | None = Field(None, description="Overrides pricing for this protocol's quote token.")


class KeeperConfig(Model):
    chain: ChainConfig
    key: KeyConfig = KeyConfig()
    gas: GasConfig = GasConfig()
    pricing: PriceSourceConfig = Field(
        PriceSourceConfig(source="fixed", value=Decimal(2000)),
        description="Price of the native (gas) token in quote-token units, for gas costs.",
    )
    profit: ProfitConfig = ProfitConfig()
    tx: TxConfig = TxConfig()
    state: StateConfig = StateConfig()
    http: HttpConfig = HttpConfig()
    alerts: AlertsConfig = AlertsConfig()
    log: LogConfig = LogConfig()
    dry_run: bool = Field(False, description="Evaluate and simulate but never send (also `--dry-run`).")
    shutdown_timeout: float = Field(
        20.0, gt=0, description="Seconds to finish the current block after SIGTERM/SIGINT before exiting anyway."
    )
    protocols: list[ProtocolConfig] = Field(default_factory=list, description="Protocol sections ([[protocols]]).")


# ---- loading ---------------------------------------------------------------------------------------


def _loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _first_error(exc: ValidationError, prefix: str = "") -> ConfigError:
    err = exc.errors(include_url=False)[0]
    loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
    path = _loc(loc)
    if prefix:
        path = f"{prefix}.{path}" if path else prefix
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    if err["type"] == "missing":
        msg = "required field is missing"
    elif err["type"] == "extra_forbidden":
        msg = "unknown setting"
    return ConfigError(path, msg)


def _env_value(raw: str) -> Any:
    s = raw.strip()
    if s[:1] in "[{":
        try:
            return json.loads(s)
        except json.JSONDecodeError:
            return raw
    return raw


def apply_env(data: dict, environ: dict[str, str]) -> dict:
    """Overlay KEEPER__A__B=value onto the parsed TOML (returns a new dict)."""
    out = json.loads(json.dumps(data, default=str))
    for name, raw in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX):
            continue
        parts = [p.lower() for p in name[len(ENV_PREFIX) :].split("__") if p]
        if not parts:
            continue
        node: Any = out
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise ConfigError(name, "list index out of range")
                if last:
                    node[int(part)] = _env_value(raw)
                else:
                    node = node[int(part)]
            else:
                if last:
                    node[part] = _env_value(raw)
                else:
                    node = node.setdefault(part, {})
    return out


def parse_config(data: dict, environ: dict[str, str] | None = None) -> KeeperConfig:
    """Validate a config dict (env overlay applied); raise ConfigError naming the first bad field."""
    from keeper.adapters import adapter_class  # noqa: PLC0415 - adapters import this module

    data = apply_env(data, dict(os.environ) if environ is None else environ)
    raw_protocols = data.pop("protocols", []) or []
    if not isinstance(raw_protocols, list):
        raise ConfigError("protocols", "must be a list of [[protocols]] tables")
    try:
        base = KeeperConfig.model_validate(data)
    except ValidationError as exc:
        raise _first_error(exc) from None
    protocols: list[ProtocolConfig] = []
    for i, raw in enumerate(raw_protocols):
        where = f"protocols[{i}]"
        if not isinstance(raw, dict):
            raise ConfigError(where, "must be a table")
        kind = raw.get("kind")
        if not kind:
            raise ConfigError(f"{where}.kind", "required field is missing")
        try:
            cls = adapter_class(str(kind))
        except KeyError as exc:
            raise ConfigError(f"{where}.kind", str(exc.args[0])) from None
        try:
            protocols.append(cls.config_model.model_validate(raw))
        except ValidationError as exc:
            raise _first_error(exc, where) from None
    names = [p.name for p in protocols]
    for i, n in enumerate(names):
        if n in names[:i]:
            raise ConfigError(f"protocols[{i}].name", f"duplicate protocol name {n!r}")
    return base.model_copy(update={"protocols": protocols})


def load_config(path: str | Path, environ: dict[str, str] | None = None) -> KeeperConfig:
    p = Path(path)
    if not p.is_file():
        raise ConfigError("", f"config file not found: {p}")
    try:
        data = tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("", f"{p}: invalid TOML: {exc}") from None
    return parse_config(data, environ)


def iter_help(model: type[BaseModel] = KeeperConfig, prefix: str = ""):
    """(dotted name, type, default, help) for every setting — the source of `keeper config-help`."""
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        ann = field.annotation
        sub = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
        if sub is not None and name != "protocols":
            yield from iter_help(sub, path + ".")
            continue
        default = "(required)" if field.is_required() else field.get_default(call_default_factory=True)
        yield path, getattr(ann, "__name__", str(ann)), default, field.description or ""
