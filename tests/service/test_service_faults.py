"""The daemon as a service under faults: the real `keeper run` process against a real anvil, with the
faults injected by the tests themselves (a node stopped and restarted from its dump, a fault proxy in
front of the primary RPC, broken websockets, a stalled chain, signals) and the outcomes read from the
chain, the exit codes, the JSON logs, /health, /metrics and an alert webhook receiver.

No sleeps as synchronisation: blocks are mined by the test and every wait is a bounded poll.
"""

from __future__ import annotations

import json
import os
import select
import signal
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from eth_account import Account
from prometheus_client.parser import text_string_to_metric_families

from keeper.devtools.anvil import AnvilProcess, free_port
from keeper.devtools.chain import DevChain
from keeper.devtools.perp_env import BUY, SELL, PerpDeployment, deploy_perp
from keeper.rpc import redact_url
from tests.conftest import start_anvil
from tests.harness import KEEPER, KEEPER_KEY, KEY_ENV, Daemon, WebhookReceiver, keeper_config, perp_protocol, write_config

pytestmark = [pytest.mark.chain, pytest.mark.slow]
E = 10**18
MMR = 625 * E // 10_000


# ---- scenario helpers ------------------------------------------------------------------------------


class World:
    """One anvil with the perp reference deployment and a small book of positions."""

    def __init__(self, node: AnvilProcess):
        self.node = node
        self.chain = DevChain(node.url)
        self.perp: PerpDeployment = deploy_perp(self.chain)
        acc = self.chain.accounts
        self.whale = acc[8]
        # 10x and 8x ETH longs, a 9x ETH short, a 10x BTC long: the crash puts the longs under water.
        self.book: list[tuple[str, str]] = []
        for (market, side, margin, lev), trader in zip(
            [("ETH", BUY, 300, 10), ("ETH", BUY, 500, 8), ("ETH", SELL, 400, 9), ("BTC", BUY, 3000, 10)], acc[1:5], strict=True
        ):
            self.perp.fund_trader(trader, margin * E + E)
            self.perp.open_position(trader, market, side, margin * E, lev * E)
            self.book.append((market, trader))

    def crash(self) -> list[tuple[str, str]]:
        """ETH −4.3 %, BTC −4.3 % on index, vAMM and TWAP; returns the positions now under water."""
        for market, price in (("ETH", 2870 * E), ("BTC", 57_400 * E)):
            self.perp.set_oracle_price(market, price)
            self.perp.move_spot_price(market, price, self.whale)
        self.perp.advance_twap(900)
        under = self.under_water()
        assert under, "the scripted crash must put positions under water"
        return under

    def open_positions(self) -> int:
        """Open positions of every trader, the whale's included."""
        who = self.book + [(m, self.whale) for m in self.perp.amms]
        return sum(1 for m, t in who if self.perp.position(m, t)["size"] != 0)

    def under_water(self) -> list[tuple[str, str]]:
        return [(m, t) for m, t in self.book if self.perp.position(m, t)["size"] != 0 and self.perp.margin_ratio(m, t) < MMR]

    def keeper_liquidations(self, from_block: int) -> list[dict]:
        logs = self.perp.clearing_house.events.PositionLiquidated.get_logs(from_block=from_block)
        return [dict(x["args"]) | {"block": x["blockNumber"]} for x in logs if x["args"]["liquidator"] == KEEPER]

    def all_liquidated(self, under: list[tuple[str, str]], from_block: int, mine: bool = True) -> bool:
        if mine:
            self.chain.mine()  # the daemon works on new blocks
        done = {(x["amm"], x["trader"]) for x in self.keeper_liquidations(from_block)}
        return not self.under_water() and all((self.perp.amm(m).address, t) in done for m, t in under)


@pytest.fixture
def world():
    node = start_anvil()
    try:
        yield World(node)
    finally:
        node.stop()


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def http_up(port: int) -> bool:
    try:
        return http_get(f"http://127.0.0.1:{port}/health")[0] in (200, 503)
    except (urllib.error.URLError, ConnectionError):
        return False


def start_daemon(cfg: Path, log_path: Path, http_port: int | None = None, **kw) -> Daemon:
    """`keeper run` started and past its startup checks (and serving HTTP when it listens)."""
    daemon = Daemon(cfg, log_path, **kw).start()
    try:
        daemon.wait_for(lambda: daemon.events("keeper_started"), what="keeper_started")
        if http_port is not None:
            daemon.wait_for(lambda: http_up(http_port), timeout=60, what="the HTTP server")
    except BaseException:
        daemon.stop(signal.SIGKILL)
        raise
    return daemon


def health(port: int) -> tuple[int, dict]:
    status, body = http_get(f"http://127.0.0.1:{port}/health")
    return status, json.loads(body)


def metric_samples(port: int) -> tuple[list, str]:
    """(samples, raw text) of /metrics, parsed with prometheus_client's own parser."""
    status, body = http_get(f"http://127.0.0.1:{port}/metrics")
    assert status == 200
    text = body.decode()
    return [s for fam in text_string_to_metric_families(text) for s in fam.samples], text


def metric(samples: list, name: str, **labels: str) -> float | None:
    """The sum of the samples called `name` whose labels include `labels` (None when there are none)."""
    found = [s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]
    return sum(found) if found else None


def head_metric(port: int) -> int:
    samples, _ = metric_samples(port)
    return int(metric(samples, "keeper_head_block") or -1)


def daemon_config(tmp_path: Path, w: World, name: str = "keeper.toml", **over) -> Path:
    over.setdefault("shutdown_timeout", 10)
    return write_config(tmp_path / name, keeper_config(w.node.url, tmp_path / "state.sqlite", [perp_protocol(w.perp)], **over))


class FaultProxyProcess:
    """`python -m keeper.devtools.faultproxy` as a subprocess on an ephemeral port (it prints its URL)."""

    def __init__(self, upstream: str, log_path: Path):
        self.upstream = upstream
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None
        self.url = ""

    def start(self, timeout: float = 20.0) -> FaultProxyProcess:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "keeper.devtools.faultproxy", "--upstream", self.upstream, "--port", "0"],
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
            )
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline().strip() if ready else ""
        if not line.startswith("http://127.0.0.1:"):
            self.stop()
            raise AssertionError(f"fault proxy did not start: {line!r} {self.log_path.read_text()[-2000:]}")
        self.url = line
        return self

    def set_mode(self, mode: str) -> None:
        req = urllib.request.Request(
            f"{self.url}/__mode",
            data=json.dumps({"mode": mode}).encode(),
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=5) as resp:
            assert json.loads(resp.read())["mode"] == mode

    def stats(self) -> dict:
        return json.loads(http_get(f"{self.url}/__stats")[1])

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self.proc is not None and self.proc.stdout:
            self.proc.stdout.close()


def wait_landed(daemon: Daemon, w: World, n: int, timeout: float = 30, accounts: set[str] | None = None) -> None:
    """Until the daemon has logged `n` liquidation_landed (it settles receipts on the next blocks), and one
    for each of `accounts` (a partially liquidated position can land twice before another lands once)."""

    def landed() -> bool:
        w.chain.mine()
        rows = daemon.events("liquidation_landed")
        return len(rows) >= n and (accounts is None or accounts <= {r["account"] for r in rows})

    daemon.wait_for(landed, timeout=timeout, what=f"{n} liquidation_landed")


def keeper_cli(*args: str, env: dict | None = None, drop: tuple[str, ...] = (), timeout: float = 120):
    """`keeper ARGS` as a subprocess (CompletedProcess), with env additions and variables dropped."""
    full = {**os.environ, KEY_ENV: KEEPER_KEY, **(env or {})}
    for name in drop:
        full.pop(name, None)
    return subprocess.run([sys.executable, "-m", "keeper", *args], capture_output=True, text=True, timeout=timeout, env=full)


# ---- 1. the node stops and comes back under the running daemon --------------------------------------


def test_daemon_survives_a_node_restart_from_its_dump_and_liquidates_afterwards(tmp_path):
    dump = tmp_path / "anvil-state.json"
    node = start_anvil(dump_state=str(dump))
    daemon = restarted = None
    try:
        w = World(node)
        http_port = free_port()
        cfg = daemon_config(
            tmp_path,
            w,
            chain={"poll_interval": 0.1, "request_timeout": 1, "max_retries": 1},
            http={"listen": f"127.0.0.1:{http_port}"},
        )
        daemon = start_daemon(cfg, tmp_path / "daemon.log", http_port)
        pid = daemon.proc.pid
        w.chain.mine()
        before_stop = w.chain.block_number()
        daemon.wait_for(lambda: head_metric(http_port) == before_stop, what="the daemon processing the pre-stop head")
        hash_before = w.chain.w3.eth.get_block(before_stop).hash.hex()

        # The node goes away: SIGTERM makes anvil write its dump.
        port = node.port
        assert node.stop() == 0
        assert dump.is_file() and dump.stat().st_size > 0
        n_failed = len(daemon.events("head_poll_failed"))
        daemon.wait_for(
            lambda: len(daemon.events("head_poll_failed")) > n_failed + 3, what="head_poll_failed while the node is down"
        )
        assert daemon.proc.poll() is None
        status, _ = http_get(f"http://127.0.0.1:{http_port}/health")
        assert status in (200, 503)  # the HTTP face keeps answering while the node is down

        # The node comes back on the SAME port from its dump; the daemon is not restarted.
        restarted = AnvilProcess(port=port, load_state=str(dump)).start()
        assert restarted.port == port, "the restarted node must serve on the daemon's configured URL"
        w.node = node = restarted
        chain = w.chain  # same URL: the scenario's web3 objects keep working
        assert chain.block_number() == before_stop  # the dump carried the whole chain
        hash_after = chain.w3.eth.get_block(before_stop).hash.hex()
        chain.mine()
        after_restart = chain.block_number()
        daemon.wait_for(lambda: head_metric(http_port) >= after_restart, timeout=60, what="the daemon processing new blocks")
        assert daemon.proc.pid == pid and daemon.proc.poll() is None
        assert len(daemon.events("keeper_started")) == 1
        if hash_after != hash_before:
            # anvil reported placeholder hashes for reloaded blocks: that is no reorg, the cursor is re-anchored
            assert daemon.events("history_replaced")
        assert not daemon.events("reorg_detected") or daemon.events("history_replaced")

        def recovered() -> bool:
            chain.mine()
            return health(http_port)[0] == 200

        daemon.wait_for(recovered, timeout=60, what="/health 200 again after the node came back")

        # New blocks are stamped with wall-clock time now (the scenario clock was 30 days behind it).
        under = w.crash()
        daemon.wait_for(lambda: w.all_liquidated(under, after_restart), timeout=60, what="liquidations after the restart")
        liqs = w.keeper_liquidations(after_restart)
        assert liqs and all(x["block"] > after_restart for x in liqs)
        wait_landed(daemon, w, len(under), accounts={t for _, t in under})
        assert {r["account"] for r in daemon.events("liquidation_landed")} >= {t for _, t in under}
        assert not daemon.events("block_failed")
        assert daemon.proc.pid == pid
    finally:
        code = daemon.stop(signal.SIGTERM) if daemon else None
        node.stop()
    assert code == 0


# ---- 2. RPC failover --------------------------------------------------------------------------------


def test_failover_from_a_failing_then_hanging_primary_still_liquidates(world, tmp_path):
    w = world
    proxy = FaultProxyProcess(w.node.url, tmp_path / "proxy.log").start()
    daemon = None
    try:
        http_port = free_port()
        cfg = write_config(
            tmp_path / "keeper.toml",
            keeper_config(
                [proxy.url, w.node.url],
                tmp_path / "state.sqlite",
                [perp_protocol(w.perp)],
                chain={"poll_interval": 0.1, "request_timeout": 1, "max_retries": 1},
                http={"listen": f"127.0.0.1:{http_port}"},
                shutdown_timeout=10,
            ),
        )
        daemon = start_daemon(cfg, tmp_path / "daemon.log", http_port)
        assert proxy.stats()["requests"] > 0  # the primary was serving
        primary, secondary = redact_url(proxy.url), redact_url(w.node.url)

        def endpoint(name: str) -> dict:
            return next(e for e in health(http_port)[1]["components"]["rpc"]["endpoints"] if e["url"] == name)

        # The primary answers HTTP 503: requests fail over, blocks keep being processed.
        proxy.set_mode("error")
        w.chain.mine()
        target = w.chain.block_number()

        def errors_seen() -> bool:
            w.chain.mine()
            return head_metric(http_port) >= target and "HTTP 503" in endpoint(primary)["last_error"]

        daemon.wait_for(errors_seen, timeout=60, what="503s on the primary and blocks still processed")
        # Then it hangs: every request to it runs into the 1 s timeout.
        proxy.set_mode("hang")
        w.chain.mine()

        def timeouts_seen() -> bool:
            w.chain.mine()
            return "timeout" in endpoint(primary)["last_error"]

        daemon.wait_for(timeouts_seen, timeout=60, what="timeouts on the hanging primary")
        start = w.chain.block_number()
        under = w.crash()
        daemon.wait_for(lambda: w.all_liquidated(under, start), timeout=60, what="liquidations through the secondary")
        wait_landed(daemon, w, len(under))

        samples, _ = metric_samples(http_port)
        assert (metric(samples, "keeper_rpc_errors_total", endpoint=primary) or 0) > 0
        assert (metric(samples, "keeper_rpc_errors_total", endpoint=secondary) or 0) == 0
        assert (metric(samples, "keeper_liquidations_total", result="landed") or 0) >= len(under)
        listed = [e["url"] for e in health(http_port)[1]["components"]["rpc"]["endpoints"]]
        assert listed == [primary, secondary]
        assert endpoint(primary)["errors"] > 0 and endpoint(secondary)["errors"] == 0
        assert proxy.stats()["faults"] > 0
    finally:
        code = daemon.stop(signal.SIGTERM) if daemon else None
        proxy.stop()
    assert code == 0


# ---- 3. keys -----------------------------------------------------------------------------------------

PASSWORD = "service-test-pw-7f3a9c1e2b"  # TEST PASSWORD for a keystore of the TEST key


def write_keystore(tmp_path: Path, password: str = PASSWORD) -> tuple[Path, Path]:
    keystore = tmp_path / "keystore.json"
    # scrypt as by default, with a smaller work factor so the many CLI runs stay fast (same format)
    keystore.write_text(json.dumps(Account.encrypt(KEEPER_KEY, password, kdf="scrypt", iterations=2**14)))
    keystore.chmod(0o600)
    pw = tmp_path / "password.txt"
    pw.write_text(password + "\n")
    pw.chmod(0o600)
    return keystore, pw


def keystore_config(tmp_path: Path, w: World, keystore: Path, pw: Path, name: str, **over) -> Path:
    return daemon_config(
        tmp_path, w, name, key={"keystore": str(keystore), "password_file": str(pw), "private_key_env": KEY_ENV}, **over
    )


def test_key_loading_keystore_and_clear_failures(world, tmp_path):
    w = world
    keystore, pw = write_keystore(tmp_path)
    assert stat.S_IMODE(keystore.stat().st_mode) == 0o600 and stat.S_IMODE(pw.stat().st_mode) == 0o600
    wrong_pw = tmp_path / "wrong-password.txt"
    wrong_pw.write_text("not-the-password-0123\n")
    wrong_pw.chmod(0o600)
    loose_pw = tmp_path / "loose-password.txt"
    loose_pw.write_text(PASSWORD + "\n")
    loose_pw.chmod(0o644)
    loose_keystore = tmp_path / "loose-keystore.json"
    loose_keystore.write_text(keystore.read_text())
    loose_keystore.chmod(0o640)
    # what scripts/keeper.service does: the password as a systemd credential (a 0400 copy in a private
    # directory) named by the KEEPER__KEY__PASSWORD_FILE override, whatever the file says
    credential = tmp_path / "credentials" / "keystore-password"
    credential.parent.mkdir(mode=0o700)
    credential.write_text(PASSWORD + "\n")
    credential.chmod(0o400)
    missing = "KEEPER_SERVICE_TEST_MISSING_KEY"
    cases = {
        "good": ("check", keystore_config(tmp_path, w, keystore, pw, "good.toml"), {}),
        "credential": (
            "check",
            keystore_config(tmp_path, w, keystore, tmp_path / "absent", "cred.toml"),
            {"KEEPER__KEY__PASSWORD_FILE": str(credential)},
        ),
        "wrong password": ("check", keystore_config(tmp_path, w, keystore, wrong_pw, "wrong.toml"), {}),
        "loose password file": ("check", keystore_config(tmp_path, w, keystore, loose_pw, "loose-pw.toml"), {}),
        "loose keystore": ("check", keystore_config(tmp_path, w, loose_keystore, pw, "loose-ks.toml"), {}),
        "missing env key (check)": ("check", daemon_config(tmp_path, w, "env.toml", key={"private_key_env": missing}), {}),
        "missing env key (run)": ("run", tmp_path / "env.toml", {}),
    }
    with ThreadPoolExecutor(max_workers=3) as pool:
        futures = {
            name: pool.submit(keeper_cli, "-c", str(cfg), cmd, env=env, drop=(KEY_ENV, missing))
            for name, (cmd, cfg, env) in cases.items()
        }
        out = {name: f.result() for name, f in futures.items()}
    for name, proc in out.items():
        assert "Traceback" not in proc.stderr + proc.stdout, name

    # (a) keystore + password file, both 600: `keeper check` passes, with the keystore's address.
    proc = out["good"]
    assert proc.returncode == 0, proc.stderr
    assert "all checks passed" in proc.stdout and KEEPER in proc.stdout
    assert out["credential"].returncode == 0 and KEEPER in out["credential"].stdout, out["credential"].stderr
    # (b) wrong password: exit 2 naming the keystore; the wrong password is not echoed either.
    proc = out["wrong password"]
    assert proc.returncode == 2 and str(keystore) in proc.stderr and "wrong password" in proc.stderr
    assert "not-the-password-0123" not in proc.stderr + proc.stdout
    # (c) a password file (or keystore) readable by others is refused, naming the file and the fix.
    proc = out["loose password file"]
    assert proc.returncode == 2 and str(loose_pw) in proc.stderr and "chmod 600" in proc.stderr
    proc = out["loose keystore"]
    assert proc.returncode == 2 and str(loose_keystore) in proc.stderr and "chmod 600" in proc.stderr
    # (d) env key configured but the variable is missing: exit 2 naming the variable, for check and run.
    for name in ("missing env key (check)", "missing env key (run)"):
        assert out[name].returncode == 2 and missing in out[name].stderr, (name, out[name].stderr)
    assert w.chain.nonce(KEEPER) == 0


def _secret_hits(text: str, secrets: list[str]) -> list[str]:
    low = text.lower()
    return [s for s in secrets if s.lower() in low]


def test_no_secret_reaches_logs_metrics_health_or_cli_output(world, tmp_path):
    w = world
    keystore, pw = write_keystore(tmp_path)
    http_port = free_port()
    with WebhookReceiver() as hook:
        # The daemon logs at debug, and its balance floor is set above its balance so alerts go out too.
        cfg = keystore_config(
            tmp_path,
            w,
            keystore,
            pw,
            "daemon.toml",
            http={"listen": f"127.0.0.1:{http_port}"},
            log={"format": "json", "level": "debug"},
            alerts={"webhook_url": hook.url, "min_balance_eth": "1000000"},
        )
        daemon = start_daemon(cfg, tmp_path / "daemon.log", http_port, env={KEY_ENV: ""})
        try:
            assert daemon.events("keeper_started")[0]["keeper"] == KEEPER
            start = w.chain.block_number()
            under = w.crash()
            daemon.wait_for(lambda: w.all_liquidated(under, start), timeout=60, what="liquidations with the keystore key")
            wait_landed(daemon, w, len(under))  # each receipt is read on one of the daemon's next blocks
            daemon.wait_for(lambda: "low_balance" in hook.kinds(), timeout=30, what="an alert delivered")
            bodies = [
                http_get(f"http://127.0.0.1:{http_port}/metrics")[1].decode(),
                http_get(f"http://127.0.0.1:{http_port}/health")[1].decode(),
            ]
        finally:
            code = daemon.stop(signal.SIGTERM)
        assert code == 0
        alerts = [r["raw"] for r in hook.received]
    check_cfg = str(keystore_config(tmp_path, w, keystore, pw, "check.toml"))
    with ThreadPoolExecutor(max_workers=3) as pool:
        check, scan, scan_json = pool.map(
            lambda args: keeper_cli("-c", check_cfg, *args, drop=(KEY_ENV,)), [("check",), ("scan",), ("scan", "--json")]
        )
    assert check.returncode == 0 and scan.returncode == 0 and scan_json.returncode == 0, check.stderr + scan.stderr

    secrets = [KEEPER_KEY, KEEPER_KEY[2:], KEEPER_KEY.upper(), KEEPER_KEY[2:].upper(), PASSWORD]
    outputs = {
        "daemon log": (tmp_path / "daemon.log").read_text(),
        "check stdout": check.stdout,
        "check stderr": check.stderr,
        "scan stdout": scan.stdout,
        "scan stderr": scan.stderr,
        "scan --json stdout": scan_json.stdout,
        "scan --json stderr": scan_json.stderr,
        "/metrics": bodies[0],
        "/health": bodies[1],
        **{f"alert {i}": a for i, a in enumerate(alerts)},
    }
    logged = {json.loads(line)["event"] for line in outputs["daemon log"].splitlines()}
    assert {"keeper_started", "liquidation_sent", "liquidation_landed", "alert", "keeper_stopped"} <= logged
    assert {"low_balance", "unhealthy"} <= {json.loads(a)["kind"] for a in alerts}
    for where, text in outputs.items():
        for n, line in enumerate(text.splitlines(), 1):
            assert not _secret_hits(line, secrets), f"a secret leaked into {where}, line {n}"
    # the scan is real: it saw the book, and the key was used (the liquidations were signed by it)
    assert len(json.loads(scan_json.stdout)["positions"]) == w.open_positions()
    assert w.chain.nonce(KEEPER) >= len(under)


# ---- 4. /health, /metrics and the alert webhook --------------------------------------------------------


def test_health_goes_503_on_a_stale_head_alerts_and_recovers(world, tmp_path):
    w = world
    http_port = free_port()
    with WebhookReceiver() as hook:
        cfg = daemon_config(
            tmp_path,
            w,
            chain={"poll_interval": 0.1, "stale_head_after": 3},
            http={"listen": f"127.0.0.1:{http_port}"},
            alerts={"webhook_url": hook.url, "repeat_after": 0},
        )
        daemon = start_daemon(cfg, tmp_path / "daemon.log", http_port)
        try:
            start = w.chain.block_number()
            under = w.crash()
            daemon.wait_for(lambda: w.all_liquidated(under, start), timeout=60, what="liquidations")
            wait_landed(daemon, w, len(under))
            seen: dict = {}

            def head_processed_and_healthy() -> bool:
                head = w.chain.block_number()
                samples, text = metric_samples(http_port)
                status = health(http_port)[0]
                if metric(samples, "keeper_head_block") == head and metric(samples, "keeper_healthy") == 1 and status == 200:
                    seen.update(head=head, samples=samples, text=text)
                    return True
                if status != 200:
                    w.chain.mine()  # a loaded machine let the head go stale: a fresh one
                return False

            daemon.wait_for(head_processed_and_healthy, what="the head processed and /health 200")
            head, samples, text = seen["head"], seen["samples"], seen["text"]
            for name in ("keeper_head_block", "keeper_healthy", "keeper_positions", "keeper_liquidations_total"):
                assert f"\n{name}" in "\n" + text, name
            assert metric(samples, "keeper_liquidations_total", protocol="perp", result="landed") >= len(under)
            assert metric(samples, "keeper_liquidations_total", protocol="perp", result="sent") >= len(under)
            positions = {s.labels["status"]: s.value for s in samples if s.name == "keeper_positions"}
            assert sum(positions.values()) == w.open_positions()
            unhealthy_before, recoveries_before = hook.kinds().count("unhealthy"), len(daemon.events("healthy_again"))

            # No new blocks: the head goes stale after 3 s → 503, the JSON names the head, an alert is POSTed.
            def stale() -> bool:
                code, body = health(http_port)
                return code == 503 and not body["components"]["head"]["ok"]

            daemon.wait_for(stale, timeout=30, what="/health 503 on a stale head")
            code, body = health(http_port)
            assert body["status"] == "unhealthy" and body["components"]["head"]["block"] == head
            assert body["components"]["head"]["age_seconds"] >= 3
            assert metric(metric_samples(http_port)[0], "keeper_healthy") == 0
            daemon.wait_for(lambda: hook.kinds().count("unhealthy") > unhealthy_before, timeout=30, what="the unhealthy alert")
            alert = [r["json"] for r in hook.received if r["json"]["kind"] == "unhealthy"][-1]
            assert "head" in alert["message"] and "head" in alert["details"] and KEEPER in alert["source"]
            assert isinstance(alert["time"], int)

            # A new block: healthy again.
            w.chain.mine()

            def healthy_at_new_head() -> bool:  # the age resets when the head is seen; the block once it is processed
                code, body = health(http_port)
                return code == 200 and body["components"]["head"]["block"] == head + 1

            daemon.wait_for(healthy_at_new_head, timeout=30, what="/health 200 with the new block processed")
            daemon.wait_for(lambda: len(daemon.events("healthy_again")) > recoveries_before, timeout=30, what="healthy_again")
        finally:
            code = daemon.stop(signal.SIGTERM)
    assert code == 0


# ---- 5. websocket heads ---------------------------------------------------------------------------------


def test_websocket_heads_drive_the_daemon_without_polling(world, tmp_path):
    w = world
    http_port = free_port()
    cfg = daemon_config(
        tmp_path, w, chain={"ws_url": w.node.ws_url, "poll_interval": 600}, http={"listen": f"127.0.0.1:{http_port}"}
    )
    daemon = start_daemon(cfg, tmp_path / "daemon.log", http_port)
    try:
        daemon.wait_for(lambda: daemon.events("head_subscription_started"), what="head_subscription_started")
        assert daemon.events("head_subscription_started")[0]["url"] == w.node.ws_url
        w.chain.mine()
        head = w.chain.block_number()
        daemon.wait_for(lambda: head_metric(http_port) == head, timeout=60, what="a mined block processed (no 600 s poll)")
        assert health(http_port)[1]["components"]["heads"]["source"] == "websocket"
        start = w.chain.block_number()
        under = w.crash()
        t0 = time.monotonic()
        # no mining from here on: only the crash's own blocks and the keeper's own transactions
        daemon.wait_for(lambda: w.all_liquidated(under, start, mine=False), timeout=60, what="prompt liquidations")
        assert time.monotonic() - t0 < 60  # well below the 600 s poll interval: the heads came over the websocket
        daemon.wait_for(lambda: len(daemon.events("liquidation_landed")) >= len(under), timeout=60, what="liquidation_landed")
        assert not daemon.events("head_subscription_lost")
    finally:
        code = daemon.stop(signal.SIGTERM)
    assert code == 0


def test_bad_websocket_url_falls_back_to_polling(world, tmp_path):
    w = world
    http_port = free_port()
    dead_ws = f"ws://127.0.0.1:{free_port()}"  # nothing listens there
    cfg = daemon_config(tmp_path, w, chain={"ws_url": dead_ws, "poll_interval": 0.2}, http={"listen": f"127.0.0.1:{http_port}"})
    daemon = start_daemon(cfg, tmp_path / "daemon.log", http_port)
    try:
        daemon.wait_for(lambda: daemon.events("head_subscription_lost"), what="head_subscription_lost")
        lost = daemon.events("head_subscription_lost")[0]
        assert lost["url"] == dead_ws and lost["fallback"] == "polling"
        assert health(http_port)[1]["components"]["heads"]["source"] == "polling"
        start = w.chain.block_number()
        under = w.crash()
        daemon.wait_for(lambda: w.all_liquidated(under, start), timeout=60, what="liquidations by polling")
        wait_landed(daemon, w, len(under))
        assert not daemon.events("head_subscription_started")
    finally:
        code = daemon.stop(signal.SIGTERM)
    assert code == 0


# ---- 6. graceful shutdown ---------------------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_stops_the_daemon_cleanly(world, tmp_path, sig):
    w = world
    cfg = daemon_config(tmp_path, w, shutdown_timeout=20)
    daemon = start_daemon(cfg, tmp_path / "daemon.log")
    try:
        start = w.chain.block_number()
        under = w.crash()
        daemon.wait_for(lambda: w.all_liquidated(under, start), timeout=60, what="liquidations")
        wait_landed(daemon, w, len(under))
    finally:
        t0 = time.monotonic()
        code = daemon.stop(sig, timeout=20)
        elapsed = time.monotonic() - t0
    assert code == 0 and elapsed < 20  # the configured shutdown_timeout
    stopped = daemon.events("keeper_stopped")
    assert len(stopped) == 1 and daemon.events("shutdown_requested")
    assert not daemon.events("shutdown_timeout")
    assert "Traceback" not in daemon.log_path.read_text()


def test_sigterm_during_a_hung_rpc_exits_within_shutdown_timeout(world, tmp_path):
    """The node stops answering (requests would wait 30 s); SIGTERM still ends the daemon with exit 0
    within shutdown_timeout, saying so."""
    w = world
    proxy = FaultProxyProcess(w.node.url, tmp_path / "proxy.log").start()
    daemon = None
    try:
        cfg = write_config(
            tmp_path / "keeper.toml",
            keeper_config(
                proxy.url,
                tmp_path / "state.sqlite",
                [perp_protocol(w.perp)],
                chain={"poll_interval": 0.1, "request_timeout": 30},
                shutdown_timeout=3,
            ),
        )
        daemon = start_daemon(cfg, tmp_path / "daemon.log")
        proxy.set_mode("hang")
        n = proxy.stats()["faults"]
        daemon.wait_for(lambda: proxy.stats()["faults"] > n, what="a request stuck in the hanging node")
        t0 = time.monotonic()
        code = daemon.stop(signal.SIGTERM, timeout=25)
        elapsed = time.monotonic() - t0
    finally:
        if daemon:
            daemon.stop(signal.SIGKILL)
        proxy.stop()
    assert code == 0 and 3 <= elapsed < 15  # cut at shutdown_timeout=3, not after the 30 s request
    assert daemon.events("shutdown_timeout") and daemon.events("keeper_stopped")
