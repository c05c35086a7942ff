"""The keeper's configuration: one place per setting — default, env override, validation, help.

Sources, later wins: the TOML file, then environment variables `KEEPER__SECTION__FIELD=value`
(nested with double underscores, list items by index: `KEEPER__PROTOCOLS__0__MIN_PROFIT=2.5`;
JSON values for lists). Every field's `description` is its help text (`keeper config-help`).

Amounts are human decimal strings in the unit named by the field (quote token, gwei, ...) and are
converted to exact integers where they are used. Protocol facts (ratios, fees, decimals) are never
configured: adapters read them on-chain; configuration only sets policy.
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import stat
import tomllib
import types
from collections.abc import Callable, Iterator, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import annotated_types
from eth_utils import is_address, is_checksum_address, to_checksum_address
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo

from keeper.presets import PRESETS, Preset, apply_gas_defaults, protocol_table
from keeper.units import to_decimal

ENV_PREFIX = "KEEPER__"


class ConfigError(Exception):
    """Invalid configuration; `field` is the dotted path of the offending setting."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.message = message


# ---- field types ---------------------------------------------------------------------------------


class Human:
    """Annotated marker: how `keeper config-help` names a type ("address", "decimal ≥ 0", ...)."""

    def __init__(self, text: str):
        self.text = text

    def __repr__(self) -> str:
        return f"Human({self.text!r})"


def _address(v: str) -> str:
    if not isinstance(v, str) or not is_address(v) or not v.startswith("0x"):
        raise ValueError("not a valid 0x-prefixed 20-byte address")
    digits = v[2:]
    if digits != digits.lower() and digits != digits.upper() and not is_checksum_address(v):
        raise ValueError("mixed-case address fails its EIP-55 checksum (a typo?); check it, or write it in lower case")
    return to_checksum_address(v)


def _url(schemes: tuple[str, ...]) -> Callable[[str], str]:
    def check(v: str) -> str:
        if not isinstance(v, str) or "://" not in v:
            raise ValueError(f"not a URL (expected {'/'.join(schemes)}://host:port)")
        scheme, rest = v.split("://", 1)
        if scheme not in schemes or not rest or rest.startswith("/"):
            raise ValueError(f"not a valid {'/'.join(schemes)} URL: {v!r}")
        return v

    return check


def _finite(v: Decimal) -> Decimal:
    if not v.is_finite():
        raise ValueError("must be a finite number")
    return v


def _non_negative(v: Decimal) -> Decimal:
    if _finite(v) < 0:
        raise ValueError("must be ≥ 0")
    return v


def _positive(v: Decimal) -> Decimal:
    if _finite(v) <= 0:
        raise ValueError("must be > 0")
    return v


def _ratio(v: Decimal) -> Decimal:
    if not (0 <= _finite(v) <= 1):
        raise ValueError("must be between 0 and 1")
    return v


Address = Annotated[str, AfterValidator(_address), Human("address")]
HttpUrl = Annotated[str, AfterValidator(_url(("http", "https"))), Human("URL (http/https)")]
WsUrl = Annotated[str, AfterValidator(_url(("ws", "wss"))), Human("URL (ws/wss)")]
Dec = Annotated[Decimal, BeforeValidator(to_decimal), AfterValidator(_finite), Human("decimal")]
NonNegDec = Annotated[Decimal, BeforeValidator(to_decimal), AfterValidator(_non_negative), Human("decimal ≥ 0")]
PosDec = Annotated[Decimal, BeforeValidator(to_decimal), AfterValidator(_positive), Human("decimal > 0")]
Ratio = Annotated[Decimal, BeforeValidator(to_decimal), AfterValidator(_ratio), Human("ratio 0–1")]


def unit(text: str) -> dict[str, Any]:
    """`Field(..., json_schema_extra=unit("gwei"))`: the unit `keeper config-help` shows after the type."""
    return {"unit": text}


def _listen(v: str | None) -> str | None:
    """`host:port` ("[::1]:9108" for IPv6); the host an IP literal or a name that resolves now.
    Returns "host:port" without brackets (readers split at the last colon)."""
    if v is None or v == "":
        return None
    if not isinstance(v, str) or ":" not in v:
        raise ValueError(f"expected host:port (e.g. 127.0.0.1:9108), got {v!r}")
    host, _, port_s = v.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not port_s.isdigit() or not (1 <= int(port_s) <= 65535):
        raise ValueError(f"port must be an integer 1–65535, got {port_s!r}")
    if not host:
        raise ValueError("host is missing (e.g. 127.0.0.1:9108, or 0.0.0.0:9108 for every interface)")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        try:
            socket.getaddrinfo(host, int(port_s), type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:
            raise ValueError(f"host {host!r} is neither an IP address nor a name that resolves ({exc})") from None
    return f"{host}:{int(port_s)}"


def _writable_dir(d: Path) -> bool:
    return os.access(d, os.W_OK | os.X_OK)


def _state_path(v: Path) -> Path:
    """The SQLite file must be usable by `keeper run` (which creates it, its folder and its `.lock`
    sidecar); checked without creating anything."""
    s = str(v)
    if s == ":memory:":
        return v
    if not s or s.endswith(("/", os.sep)):
        raise ValueError(f"expected a file path, got {s!r}")
    p = Path(os.path.expanduser(s))
    try:
        st = p.stat()
    except FileNotFoundError:
        st = None
    except NotADirectoryError:
        st = None  # reported below: a parent is a file
    except OSError as exc:
        raise ValueError(f"cannot use {s}: {exc.strerror}") from None
    if st is not None:
        if stat.S_ISDIR(st.st_mode):
            raise ValueError(f"{s} is a directory; name a file inside it (e.g. {p / 'keeper.sqlite'})")
        if not stat.S_ISREG(st.st_mode):
            raise ValueError(f"{s} is not a regular file")
        if not os.access(p, os.R_OK | os.W_OK):
            raise ValueError(f"{s} is not readable and writable by this user")
    parent = p.absolute().parent
    # the nearest existing ancestor: a directory we may create the rest in (the daemon creates them)
    probe = parent
    while not probe.exists() and not probe.is_symlink():
        probe = probe.parent
    if not probe.is_dir():
        raise ValueError(f"{probe} is not a directory, so {s} cannot be created")
    if not _writable_dir(probe):
        what = "its folder" if probe == parent else f"the nearest existing folder {probe}"
        raise ValueError(f"{what} is not writable by this user (the journal and its .lock file are created there)")
    return p


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
    poll_interval: float = Field(
        1.0, gt=0, description="Seconds between head polls when not subscribed.", json_schema_extra=unit("seconds")
    )
    request_timeout: float = Field(
        10.0, gt=0, description="Timeout in seconds for every RPC request.", json_schema_extra=unit("seconds")
    )
    max_retries: int = Field(3, ge=0, le=20, description="Retries per request (across endpoints) on transport errors.")
    stale_head_after: float = Field(
        60.0,
        gt=0,
        description="Seconds without a new block before the endpoint is considered stale.",
        json_schema_extra=unit("seconds"),
    )
    log_page_size: int = Field(2000, ge=1, le=1_000_000, description="Blocks per eth_getLogs page while indexing.")
    batch_size: int = Field(100, ge=1, le=1000, description="Calls per Multicall3 aggregate / JSON-RPC batch.")
    multicall: Literal["auto", "off"] | Address = Field(
        "auto",
        description="'auto': use Multicall3 at its canonical address when it has code; 'off': JSON-RPC batches; "
        "or the address of a Multicall3-compatible aggregator.",
    )
    l2: Literal["auto", "op", "arbitrum", "none"] = Field(
        "auto",
        description="L1 data fee model, priced into every profit decision: 'op' (OP-stack GasPriceOracle "
        "0x42…0F: getL1FeeUpperBound / getL1Fee of the transaction), 'arbitrum' (NodeInterface 0x…C8 "
        "gasEstimateL1Component: L1 gas inside the gas limit), 'none'; 'auto' detects it at startup by "
        "eth_call probes (a named model must answer, else startup fails).",
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
        Decimal(200),
        description="Hard cap on maxFeePerGas (gwei); above it the keeper waits instead of sending.",
        json_schema_extra=unit("gwei"),
    )
    priority_fee_gwei: NonNegDec = Field(Decimal(1), description="Tip offered per gas (gwei).", json_schema_extra=unit("gwei"))
    max_priority_fee_gwei: NonNegDec = Field(
        Decimal(5), description="Hard cap on the tip, replacements included (gwei).", json_schema_extra=unit("gwei")
    )
    base_fee_multiplier: Dec = Field(
        Decimal(2), ge=1, description="maxFeePerGas = min(cap, next base fee × this + tip): headroom for rising base fees."
    )
    gas_limit_multiplier: Dec = Field(
        Decimal("1.3"), ge=1, description="Gas limit = simulated gas × this + gas_limit_extra (out-of-gas loses money)."
    )
    gas_limit_extra: int = Field(30_000, ge=0, description="Gas added to the padded estimate.")
    max_gas_limit: int = Field(3_000_000, gt=21_000, description="Never send a transaction with a higher gas limit.")
    tip_policy: Literal["fixed", "share"] = Field(
        "fixed",
        description="'fixed': tip = priority_fee_gwei; 'share': tip = tip_share × (reward − base-fee cost) per gas, "
        "never below priority_fee_gwei; always under max_priority_fee_gwei, max_fee_per_gas_gwei and break-even.",
    )
    tip_share: Ratio = Field(
        Decimal(0),
        description="With tip_policy = 'share': the share (0–1) of the expected reward left after the base fee offered as tip.",
    )
    outbid: bool = Field(
        True,
        description="When a rival transaction for the same position is seen in the mempool: outbid it by 1 wei of tip "
        "(at the same nonce if ours is pending) while that still pays, else drop ours.",
    )

    @model_validator(mode="after")
    def _tip_under_caps(self) -> GasConfig:
        if self.priority_fee_gwei > self.max_priority_fee_gwei:
            raise ValueError("priority_fee_gwei exceeds max_priority_fee_gwei")
        if self.max_priority_fee_gwei > self.max_fee_per_gas_gwei:
            raise ValueError("max_priority_fee_gwei exceeds max_fee_per_gas_gwei")
        if self.tip_policy == "share" and self.tip_share == 0:
            raise ValueError("tip_policy = 'share' needs tip_share > 0 (a share of 0 is the fixed tip)")
        return self


class PriceSourceConfig(Model):
    source: Literal["fixed", "chainlink"] = Field(
        "fixed", description="'fixed': `value`; 'chainlink': AggregatorV3 `feed` (latestRoundData)."
    )
    value: PosDec | None = Field(
        None,
        description="Fixed price of 1 native token in quote-token units (> 0).",
        json_schema_extra=unit("quote token per native token"),
    )
    feed: Address | None = Field(None, description="Chainlink-compatible aggregator giving the native token's quote price.")
    max_age: float = Field(
        3600.0, gt=0, description="Seconds after which a feed answer is stale (then no sends).", json_schema_extra=unit("seconds")
    )

    @model_validator(mode="after")
    def _complete(self) -> PriceSourceConfig:
        if self.source == "fixed" and self.value is None:
            raise ValueError("value is required for source = 'fixed'")
        if self.source == "chainlink" and self.feed is None:
            raise ValueError("feed is required for source = 'chainlink'")
        return self


class ProfitConfig(Model):
    min_profit: NonNegDec = Field(
        Decimal(0),
        description="Send only if reward − gas cost ≥ this, in the market's quote token (per-protocol/market overrides).",
        json_schema_extra=unit("quote token"),
    )
    allow_unprofitable: bool = Field(
        False, description="Opt in to sending liquidations whose expected profit is below min_profit (never by default)."
    )


class TxConfig(Model):
    replace_after_blocks: int = Field(3, ge=1, description="A transaction not mined after this many blocks is replaced.")
    fee_bump: Dec = Field(
        Decimal("1.125"), ge=Decimal("1.1"), description="Fee multiplier per replacement (≥ 1.1, nodes require +10 %)."
    )
    max_replacements: int = Field(5, ge=0, description="Replacements before the keeper cancels (self-transfer at that nonce).")
    max_in_flight_per_market: int | None = Field(
        None,
        ge=1,
        description="Liquidations in flight per market at once; default per protocol (8). Without eth_simulateV1 "
        "on the node, markets where one liquidation moves the price for the next (a vAMM) send one per block.",
    )
    max_sends_per_block: int = Field(
        16, ge=1, description="Transactions (approvals included) the keeper's key sends at one head, best first."
    )
    max_repeats_per_position: int = Field(
        3,
        ge=0,
        description="Extra partial liquidations of one position in the same block, each simulated after the "
        "previous (0: one per position per block).",
    )
    simulation: Literal["auto", "sequence", "single"] = Field(
        "auto",
        description="'sequence': the block's sends simulated in order in one eth_simulateV1 call, each on the state "
        "the previous leave; 'single': each alone with eth_estimateGas at the head (one per dependent market per "
        "block); 'auto': sequence when the node answers eth_simulateV1.",
    )
    failure_cooldown_blocks: int = Field(
        5, ge=0, description="After a reverted or failed liquidation, blocks to wait before re-trying that position."
    )
    private_rpc_urls: list[HttpUrl] = Field(
        default_factory=list,
        description="Private submission endpoints (Flashbots Protect, bloXroute, a builder's RPC): when set, every raw "
        "transaction (send, replacement, cancellation, rebroadcast) goes to all of them at once and never to "
        "chain.rpc_urls (unless private_fallback); receipts and nonces are still read from chain.rpc_urls.",
    )
    private_method: Literal["eth_sendRawTransaction", "eth_sendPrivateTransaction"] = Field(
        "eth_sendRawTransaction",
        description="JSON-RPC method of the private endpoints: 'eth_sendRawTransaction' (Flashbots Protect style) or "
        "'eth_sendPrivateTransaction' (params [{\"tx\": raw}], bloXroute / builder style).",
    )
    mempool_watch: Literal["off", "auto", "txpool", "filter"] = Field(
        "off",
        description="Watch pending transactions for rivals' liquidations of the positions the keeper goes for "
        "(txpool_content, or a pending-transaction filter; 'auto' tries both): a rival is outbid (gas.outbid) while "
        "that pays. One or two extra calls per block; nodes that answer neither turn it off (logged).",
    )
    private_fallback: bool = Field(
        False,
        description="When no private endpoint answers (connection refused, timeout, HTTP error), send the transaction "
        "to chain.rpc_urls instead (it becomes public). Off: the send fails and nothing is public.",
    )


class StateConfig(Model):
    path: Annotated[Path, AfterValidator(_state_path)] = Field(
        Path("keeper.sqlite"),
        validate_default=True,
        description="SQLite file for the index cursor, positions and tx journal (`keeper run` creates it, its folder "
        "and an exclusive `<path>.lock`; scan and check create nothing).",
    )


class HttpConfig(Model):
    listen: Annotated[str | None, AfterValidator(_listen), Human("host:port")] = Field(
        "127.0.0.1:9108",
        validate_default=True,
        description="host:port for /health and /metrics (IPv6 as [::1]:9108; the host an IP or a resolvable name); "
        "empty to disable.",
    )


class AlertsConfig(Model):
    webhook_url: HttpUrl | None = Field(None, description="JSON POST target for alerts (unhealthy, low balance, failed sends).")
    min_balance_eth: NonNegDec = Field(
        Decimal("0.05"),
        description="Alert and report unhealthy below this native balance.",
        json_schema_extra=unit("native token"),
    )
    repeat_after: float = Field(
        600.0,
        ge=0,
        description="Seconds before the same alert (kind and subject) is POSTed again; 0 sends every one.",
        json_schema_extra=unit("seconds"),
    )


class LogConfig(Model):
    level: Literal["debug", "info", "warning", "error"] = Field("info", description="Log level.")
    format: Literal["auto", "json", "console"] = Field("auto", description="'auto': JSON unless stderr is a terminal.")


def _watch_accounts(v: Any) -> Any:
    """`"all"` or a list of addresses (each checked like every address setting)."""
    if v == "all":
        return v
    if not isinstance(v, list):
        raise ValueError('expected a list of addresses or "all"')
    out = []
    for i, a in enumerate(v):
        try:
            out.append(_address(a))
        except ValueError as exc:
            raise ValueError(f"item {i} ({a!r}): {exc}") from None
    return out


class WatchConfig(Model):
    """The watchlist (README "Watchlist"): alerts and metrics per watched position, never a send."""

    enabled: bool = Field(True, description="Set false to keep the section without watching anything.")
    accounts: Annotated[list[str] | Literal["all"], BeforeValidator(_watch_accounts), Human('list of address | "all"')] = Field(
        default_factory=list, description='Position owners to watch, or "all" (every indexed position).'
    )
    thresholds: list[Ratio] = Field(
        default_factory=lambda: ["0.8", "0.9"],
        validate_default=True,
        description="Risk-usage levels that alert once when crossed upwards (1.0 = the liquidation threshold; perp: "
        "maintenance ÷ effective margin ratio, LLAMMA: 1/(1 + health)).",
    )
    hysteresis: Ratio = Field(
        Decimal("0.02"), description="How far below a crossed level the value must drop before it clears (no flapping)."
    )
    soft_liquidation: bool = Field(True, description="LLAMMA: alert when a watched loan enters soft liquidation.")
    converted_share: Ratio | None = Field(
        None, description="LLAMMA: alert when this share of a watched loan's collateral is converted (0.5 = 50 %)."
    )
    health_below: Ratio | None = Field(None, description="LLAMMA: alert when a watched loan's full health is at or below this.")

    @field_validator("thresholds")
    @classmethod
    def _levels(cls, v: list[Decimal]) -> list[Decimal]:
        for i, t in enumerate(v):
            if t <= 0:
                raise ValueError(f"item {i} ({t}): must be > 0")
            if i and t <= v[i - 1]:
                raise ValueError(f"item {i} ({t}): levels must be strictly increasing")
        return v

    @field_validator("hysteresis")
    @classmethod
    def _below_levels(cls, v: Decimal, info: ValidationInfo) -> Decimal:
        levels = info.data.get("thresholds") or []
        if levels and v >= levels[0]:
            raise ValueError(f"must be smaller than the lowest threshold ({levels[0]}), or that level could never clear")
        return v


class ProtocolConfig(Model):
    """Fields every protocol section has; adapters extend it with their own."""

    kind: str = Field(description="Adapter kind, e.g. 'perp_v1' or 'llamma'.")
    preset: str | None = Field(
        None,
        description="A real deployment (keeper/presets.py: crvusd-ethereum, llamalend-ethereum, llamalend-arbitrum, "
        "perp-v1-xdai): fills kind, addresses, start_block, name and native_price (unless [pricing] is set); chain.chain_id "
        "must be its chain's (filled in when absent); every key set beside it overrides the preset.",
    )
    name: str = Field(min_length=1, max_length=40, pattern=r"^[A-Za-z0-9_.-]+$", description="Label used in logs and metrics.")
    enabled: bool = Field(True, description="Set false to keep a section in the file without running it.")
    start_block: int = Field(0, ge=0, description="First block to index events from.")
    min_profit: NonNegDec | None = Field(
        None, description="Overrides profit.min_profit for this protocol.", json_schema_extra=unit("quote token")
    )
    native_price: PriceSourceConfig | None = Field(
        None, description="Price of the gas token in this protocol's quote token; overrides [pricing] (same fields)."
    )

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        """A subclass whose `kind` is a Literal registers itself as that protocol kind's config model."""
        super().__pydantic_init_subclass__(**kwargs)
        kind_ann = cls.model_fields["kind"].annotation
        if get_origin(kind_ann) is Literal:
            for kind in get_args(kind_ann):
                register_protocol_kind(str(kind), cls)


class KeeperConfig(Model):
    chain: ChainConfig
    key: KeyConfig = Field(default_factory=lambda: KeyConfig.model_validate({}))
    gas: GasConfig = Field(default_factory=lambda: GasConfig.model_validate({}))
    pricing: PriceSourceConfig | None = Field(
        None,
        description="Price of the native (gas) token in quote-token units, to cost gas. Required unless every enabled "
        "protocol sets native_price (there is no default: a wrong one mis-prices every decision).",
    )
    profit: ProfitConfig = Field(default_factory=lambda: ProfitConfig.model_validate({}))
    tx: TxConfig = Field(default_factory=lambda: TxConfig.model_validate({}))
    state: StateConfig = Field(default_factory=lambda: StateConfig.model_validate({}))
    http: HttpConfig = Field(default_factory=lambda: HttpConfig.model_validate({}))
    alerts: AlertsConfig = Field(default_factory=lambda: AlertsConfig.model_validate({}))
    log: LogConfig = Field(default_factory=lambda: LogConfig.model_validate({}))
    watch: WatchConfig = Field(
        default_factory=lambda: WatchConfig.model_validate({}), description="Watchlist alerts ([watch], README)."
    )
    dry_run: bool = Field(False, description="Evaluate and simulate but never send (also `--dry-run`).")
    shutdown_timeout: float = Field(
        20.0, gt=0, description="Seconds to finish the current block after SIGTERM/SIGINT before exiting anyway."
    )
    protocols: list[ProtocolConfig] = Field(
        default_factory=list, description="Protocol sections ([[protocols]]); at least one enabled."
    )

    def price_source(self, protocol: ProtocolConfig) -> PriceSourceConfig:
        """The gas token's price source for `protocol`: its native_price, else [pricing] (validated to exist)."""
        source = protocol.native_price or self.pricing
        if source is None:  # parse_config rejects this for every enabled protocol
            raise ConfigError("pricing", f"no price source for protocol {protocol.name!r}")
        return source


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
    loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and (p.startswith("function-") or p == "[key]")))
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


# ---- protocol kinds ----------------------------------------------------------------------------------
# This module never imports the adapters: each adapter's config model (a ProtocolConfig subclass
# with `kind: Literal["..."]`) registers itself when its module is imported, and keeper.adapters
# installs a loader that imports every adapter module on first need.

_PROTOCOL_KINDS: dict[str, type[ProtocolConfig]] = {}
_kinds_loader: Callable[[], object] | None = None


def register_protocol_kind(kind: str, model: type[ProtocolConfig]) -> None:
    _PROTOCOL_KINDS[kind] = model


def set_protocol_kinds_loader(loader: Callable[[], object]) -> None:
    """`loader()` imports every adapter module (keeper.adapters installs its registry discovery)."""
    global _kinds_loader  # noqa: PLW0603 - one process-wide hook
    _kinds_loader = loader


def protocol_kinds() -> dict[str, type[ProtocolConfig]]:
    """kind → config model of every known protocol kind."""
    if _kinds_loader is not None:
        _kinds_loader()
    return dict(_PROTOCOL_KINDS)


def parse_config(
    data: dict, environ: dict[str, str] | None = None, kinds: Mapping[str, type[ProtocolConfig]] | None = None
) -> KeeperConfig:
    """Validate a config dict (env overlay applied); raise ConfigError naming the first bad field.
    `kinds`: kind → config model (default: every registered protocol kind)."""
    data = apply_env(data, dict(os.environ) if environ is None else environ)
    raw_protocols = data.pop("protocols", []) or []
    if not isinstance(raw_protocols, list):
        raise ConfigError("protocols", "must be a list of [[protocols]] tables")
    raw_protocols, presets = _apply_presets(raw_protocols, data)
    apply_gas_defaults(data, [p for _, p in presets])  # chain fee defaults (e.g. tip 0 on FCFS L2s)
    try:
        base = KeeperConfig.model_validate(data)
    except ValidationError as exc:
        raise _first_error(exc) from None
    for i, p in presets:
        if base.chain.chain_id != p.chain_id:
            raise ConfigError(
                f"protocols[{i}].preset",
                f"preset {p.name!r} is a deployment on chain id {p.chain_id}, but chain.chain_id = {base.chain.chain_id}",
            )
    known = dict(kinds) if kinds is not None else dict(_PROTOCOL_KINDS)
    protocols: list[ProtocolConfig] = []
    for i, raw in enumerate(raw_protocols):
        where = f"protocols[{i}]"
        if not isinstance(raw, dict):
            raise ConfigError(where, "must be a table")
        kind = raw.get("kind")
        if not kind:
            raise ConfigError(f"{where}.kind", "required field is missing")
        if kinds is None and str(kind) not in known:
            known = protocol_kinds()
        model = known.get(str(kind))
        if model is None:
            raise ConfigError(f"{where}.kind", f"unknown protocol kind {kind!r} (known: {', '.join(sorted(known)) or 'none'})")
        try:
            protocols.append(model.model_validate(raw))
        except ValidationError as exc:
            raise _first_error(exc, where) from None
        _check_overrides(protocols[-1], where)
    names = [p.name for p in protocols]
    for i, n in enumerate(names):
        if n in names[:i]:
            raise ConfigError(f"protocols[{i}].name", f"duplicate protocol name {n!r}")
    enabled = [(i, p) for i, p in enumerate(protocols) if p.enabled]
    if not enabled:
        what = "no [[protocols]] section" if not protocols else "every [[protocols]] section has enabled = false"
        raise ConfigError("protocols", f"{what}: the keeper would watch nothing; add one (see `keeper config-help`)")
    if base.pricing is None:
        missing = [(i, p) for i, p in enabled if p.native_price is None]
        if missing:
            names_ = ", ".join(f"protocols[{i}] ({p.name})" for i, p in missing)
            raise ConfigError(
                "pricing",
                'required: the gas token\'s price in quote-token units, e.g. [pricing] source = "fixed", value = "3000" '
                f"(or a chainlink feed), or native_price on every enabled protocol (missing on {names_})",
            )
    return base.model_copy(update={"protocols": protocols})


def _apply_presets(raw_protocols: list, data: dict) -> tuple[list, list[tuple[int, Preset]]]:
    """Expand `preset = "NAME"` in [[protocols]] tables (keeper/presets.py); fill chain.chain_id from the first
    preset when the file has none. Returns the expanded tables and (index, preset) of each table that named one."""
    out: list = []
    used: list[tuple[int, Preset]] = []
    for i, raw in enumerate(raw_protocols):
        name = raw.get("preset") if isinstance(raw, dict) else None
        if name is None:
            out.append(raw)
            continue
        where = f"protocols[{i}].preset"
        if not isinstance(name, str) or name not in PRESETS:
            raise ConfigError(where, f"unknown preset {name!r} (known: {', '.join(sorted(PRESETS))})")
        p = PRESETS[name]
        if "kind" in raw and raw["kind"] != p.protocol.get("kind"):
            raise ConfigError(
                f"protocols[{i}].kind", f"preset {name!r} is a {p.protocol.get('kind')!r} deployment, not {raw['kind']!r}"
            )
        out.append(protocol_table(p, raw, has_pricing=data.get("pricing") is not None))
        used.append((i, p))
    chain = data.get("chain")
    if used and isinstance(chain, dict) and "chain_id" not in chain:
        chain["chain_id"] = used[0][1].chain_id
    return out, used


def _check_overrides(protocol: ProtocolConfig, where: str) -> None:
    """Per-market overrides must name a watched market when the protocol lists its markets explicitly
    (with an empty list every market is discovered on-chain: the adapter checks them at start)."""
    markets = getattr(protocol, "markets", None)
    overrides = getattr(protocol, "market_overrides", None)
    if not markets or not isinstance(overrides, dict) or not isinstance(markets, list):
        return
    watched = set(markets)
    for address in overrides:
        if address not in watched:
            raise ConfigError(
                f"{where}.market_overrides.{address}", "override for a market that is not in `markets` (not watched)"
            )


def load_config(
    path: str | Path, environ: dict[str, str] | None = None, kinds: Mapping[str, type[ProtocolConfig]] | None = None
) -> KeeperConfig:
    p = Path(path)
    if not p.is_file():
        raise ConfigError("", f"config file not found: {p}")
    try:
        data = tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("", f"{p}: invalid TOML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError("", f"cannot read config file {p}: {exc}") from None
    return parse_config(data, environ, kinds)


# ---- help --------------------------------------------------------------------------------------------

_PLAIN = {bool: "true | false", int: "integer", float: "number", str: "string", Path: "path", Decimal: "decimal"}


def _bounds(metadata: list[Any] | tuple[Any, ...]) -> str:
    out = []
    for m in metadata:
        for attr, sym in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<")):
            if isinstance(m, getattr(annotated_types, attr.capitalize())):
                out.append(f"{sym} {getattr(m, attr)}")
    return ", ".join(out)


def _lengths(metadata: list[Any] | tuple[Any, ...], what: str) -> str:
    lo = next((m.min_length for m in metadata if isinstance(m, annotated_types.MinLen)), 0)
    hi = next((m.max_length for m in metadata if isinstance(m, annotated_types.MaxLen)), None)
    if hi is not None:
        return f"{lo}–{hi} {what}".rstrip()
    return f"at least {lo} {what}".rstrip() if lo else ""


def human_type(annotation: Any, metadata: list[Any] | tuple[Any, ...] = ()) -> str:
    """A type as a person reads it: "address", "list of address", "'on' | 'off' | 'auto'", "integer ≥ 1"."""
    origin = get_origin(annotation)
    if origin is Annotated:
        base, *extra = get_args(annotation)
        return human_type(base, [*extra, *metadata])
    marker = next((m.text for m in metadata if isinstance(m, Human)), None)
    lengths = ""
    if marker is not None:
        text = marker
    elif origin is Literal:
        text = " | ".join(repr(a) for a in get_args(annotation))
    elif origin in (Union, types.UnionType):
        text = " | ".join(human_type(a) for a in get_args(annotation) if a is not type(None))
    elif origin is list:
        text = f"list of {human_type(get_args(annotation)[0])}"
        lengths = _lengths(metadata, "")
    elif origin is dict:
        key, value = get_args(annotation)
        text = f"table: {human_type(key)} → {human_type(value)}"
    elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
        text = "table"
    else:
        text = _PLAIN.get(annotation, getattr(annotation, "__name__", str(annotation)))
        if annotation is str:
            lengths = _lengths(metadata, "characters")
    qualifiers = ", ".join(q for q in (_bounds(metadata), lengths) if q)
    if not qualifiers:
        return text
    return f"{text} {qualifiers}" if qualifiers[0] in "≥>≤<" else f"{text}, {qualifiers}"


def _field_type(field: FieldInfo) -> str:
    text = human_type(field.annotation, field.metadata)
    extra = field.json_schema_extra
    if isinstance(extra, dict) and extra.get("unit"):
        text += f" ({extra['unit']})"
    return text


def _sub_models(annotation: Any) -> list[type[BaseModel]]:
    """The table models a field holds (directly, optional, or as the values of a table)."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _sub_models(get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        return [m for a in get_args(annotation) for m in _sub_models(a)]
    if origin is dict:
        return _sub_models(get_args(annotation)[1])
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return []


def iter_help(model: type[BaseModel] = KeeperConfig, prefix: str = "") -> Iterator[tuple[str, str, str, str]]:
    """(dotted name, human type, default, help) for every setting — the source of `keeper config-help`.
    [[protocols]] fields are listed per kind by `iter_protocol_help`."""
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        if model is KeeperConfig and name == "protocols":
            continue
        subs = _sub_models(field.annotation)
        default = _default(field)
        if subs:
            keyed = get_origin(field.annotation) is dict
            yield path, _field_type(field), "" if default != "(required)" else default, field.description or ""
            yield from iter_help(subs[0], path + (".<address>." if keyed else "."))
            continue
        yield path, _field_type(field), default, field.description or ""


def _default(field: FieldInfo) -> str:
    if field.is_required():
        return "(required)"
    value = field.get_default(call_default_factory=True)
    if value is None:
        return "(unset)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | Decimal | Path):
        return f'"{value}"'
    if isinstance(value, list | dict) and not value:
        return "[]" if isinstance(value, list) else "{}"
    return str(value)


def iter_protocol_help(
    kinds: Mapping[str, type[ProtocolConfig]] | None = None,
) -> Iterator[tuple[str, list[tuple[str, str, str, str]]]]:
    """(kind, its [[protocols]] fields as iter_help rows) for every protocol kind."""
    known = protocol_kinds() if kinds is None else dict(kinds)
    for kind in sorted(known):
        rows = [r for r in iter_help(known[kind]) if r[0] != "kind"]
        yield kind, [("kind", f'"{kind}"', "(required)", "Adapter kind."), *rows]
