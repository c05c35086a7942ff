"""`keeper sandbox` as a developer uses it: the sandbox started as a subprocess, a `keeper run` against the
keeper.toml it writes liquidates after `keeper sandbox move ETH -8%`, `open` adds positions and loans while
the keeper runs, Ctrl-C (SIGINT) exits 0 with the chain dumped, and `--resume` serves the same chain.

Every wait is bounded and driven by the processes' own output lines (read by a thread into a queue)."""

from __future__ import annotations

import json
import os
import queue
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from eth_account import Account

from keeper.cli import main
from keeper.devtools.anvil import free_port
from keeper.devtools.chain import DevChain
from keeper.devtools.sandbox import MARKER, STATE_FILE
from keeper.devtools.scenario import attach_llamma, attach_perp

E = 10**18


class Proc:
    """A child process whose output lines are collected by a thread; `wait_for` blocks on them (bounded)."""

    def __init__(self, argv: list[str], env: dict[str, str] | None = None):
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True
        )
        self.lines: list[str] = []
        self._q: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)
            self._q.put(line)
        self._q.put(None)

    def wait_for(self, pred: Callable[[str], bool], timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                line = self._q.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                raise AssertionError(f"process exited ({self.proc.wait()}):\n{''.join(self.lines)[-4000:]}")
            if pred(line):
                return line
        raise AssertionError(f"no matching line within {timeout}s:\n{''.join(self.lines)[-4000:]}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def event(name: str, **fields: str) -> Callable[[str], bool]:
    def pred(line: str) -> bool:
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            return False
        return isinstance(rec, dict) and rec.get("event") == name and all(rec.get(k) == v for k, v in fields.items())

    return pred


def keeper_cli(*args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "keeper", *args], capture_output=True, text=True, timeout=timeout)


def test_sandbox_liquidates_after_move_saves_on_ctrl_c_and_resumes(tmp_path: Path) -> None:
    wd = tmp_path / "sb"
    port = free_port()
    sandbox = [sys.executable, "-m", "keeper", "sandbox", "--workdir", str(wd), "--port", str(port)]
    env = {k: v for k, v in os.environ.items() if k != "KEEPER_PRIVATE_KEY"}
    procs: list[Proc] = []
    try:
        sb = Proc([*sandbox, "--block-time", "0.5"])
        procs.append(sb)
        sb.wait_for(lambda s: s.startswith("sandbox: ready"), 150)
        info = json.loads((wd / "sandbox.json").read_text())
        assert info["rpc_url"] == f"http://127.0.0.1:{port}"
        assert len(info["positions"]) == 30 and len(info["loans"]) == 15

        # the keeper's key: a keystore and its password file, both mode 600; the key itself is printed nowhere
        ks, pw = wd / "keeper-keystore.json", wd / "keeper-password"
        assert stat.S_IMODE(ks.stat().st_mode) == 0o600 and stat.S_IMODE(pw.stat().st_mode) == 0o600
        key = Account.decrypt(json.loads(ks.read_text()), pw.read_text().strip())
        assert Account.from_key(key).address == info["keeper"]["address"]
        assert bytes(key).hex() not in "".join(sb.lines).lower()

        keeper = Proc([sys.executable, "-m", "keeper", "-c", str(wd / "keeper.toml"), "run"], env=env)
        procs.append(keeper)
        keeper.wait_for(event("keeper_started"), 60)

        moved = keeper_cli("sandbox", "--workdir", str(wd), "move", "ETH", "-8%", "--json")
        assert moved.returncode == 0, moved.stderr
        by_protocol = {m["protocol"]: m for m in json.loads(moved.stdout)}
        assert by_protocol["perp"]["oracle_after"] == 2760 * E  # the index, exactly −8 %
        # the vAMM followed it (within 2 %: the keeper's liquidations may trade it too)
        assert abs(by_protocol["perp"]["market_after"] - 2760 * E) < 2760 * E // 50
        assert by_protocol["llamma"]["oracle_after"] == 2760 * E

        landed = json.loads(keeper.wait_for(event("liquidation_landed", protocol="palmswap"), 60))
        chain = DevChain(info["rpc_url"])
        perp = attach_perp(chain, info["perp"])
        liquidated = perp.clearing_house.events.PositionLiquidated.get_logs(from_block=0)
        assert {(x["args"]["trader"], x["args"]["liquidator"]) for x in liquidated} >= {
            (landed["account"], info["keeper"]["address"])
        }

        # positions and loans added while the keeper runs
        opened = keeper_cli("sandbox", "--workdir", str(wd), "open", "perp", "ETH", "long", "10x", "1000", "--json")
        assert opened.returncode == 0, opened.stderr
        trader = json.loads(opened.stdout)["account"]
        size = perp.position("ETH", trader)["size"]
        assert size > 0
        loan = keeper_cli(
            "sandbox", "--workdir", str(wd), "open", "llamma", "ETH", "10", "--bands", "4", "--ltv", "95%", "--json"
        )
        assert loan.returncode == 0, loan.stderr
        borrower = json.loads(loan.stdout)["account"]
        crv = attach_llamma(chain, info["llamma"], "ETH")
        debt = crv.controller.functions.debt(borrower).call()
        assert debt > 0

        assert keeper.stop() == 0
        book = {(p["market"], p["account"]): perp.position(p["market"], p["account"])["size"] for p in info["positions"]}
        head = chain.w3.eth.get_block("latest")
        assert sb.stop(signal.SIGINT) == 0  # Ctrl-C
        assert "sandbox: stopped" in "".join(sb.lines)
        assert (wd / STATE_FILE).stat().st_size > 0

        # --resume: the same chain on the same port, with the same addresses, positions and loans
        sb2 = Proc([*sandbox, "--resume", "--block-time", "0"])
        procs.append(sb2)
        sb2.wait_for(lambda s: s.startswith("sandbox: ready"), 60)
        info2 = json.loads((wd / "sandbox.json").read_text())
        for k in ("rpc_url", "perp", "llamma", "accounts", "start_block"):
            assert info2[k] == info[k]
        assert info2["keeper"]["address"] == info["keeper"]["address"]
        assert chain.block_number() > head["number"]
        assert perp.position("ETH", trader)["size"] == size
        assert {k: perp.position(*k)["size"] for k in book} == book  # liquidated ones included
        assert crv.controller.functions.debt(borrower).call() >= debt
        assert len(perp.clearing_house.events.PositionLiquidated.get_logs(from_block=0)) == len(
            perp.clearing_house.events.PositionLiquidated.get_logs(from_block=0, to_block=head["number"])
        )
        # new blocks are mined fine, the chain's clock going on from the saved one (not back in time)
        again = keeper_cli("sandbox", "--workdir", str(wd), "move", "BTC", "-1%", "--protocol", "perp")
        assert again.returncode == 0, again.stderr
        latest = chain.w3.eth.get_block("latest")
        assert latest["number"] > head["number"] + 1 and latest["timestamp"] > head["timestamp"]
        assert latest["timestamp"] < time.time()  # still behind wall time
        assert sb2.stop(signal.SIGINT) == 0
    finally:
        for p in procs:
            p.kill()


def test_refuses_a_foreign_folder_and_guards_a_saved_chain(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    assert main(["sandbox", "--workdir", str(mine)]) == 2
    err = capsys.readouterr().err
    assert "not created by `keeper sandbox`" in err and "Traceback" not in err
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]

    assert main(["sandbox", "--workdir", str(tmp_path / "new"), "--resume"]) == 2
    assert "no saved sandbox" in capsys.readouterr().err

    saved = tmp_path / "saved"  # a sandbox folder holding a saved chain: never replaced silently
    saved.mkdir()
    (saved / MARKER).write_text("")
    (saved / STATE_FILE).write_text("{}")
    assert main(["sandbox", "--workdir", str(saved)]) == 2
    assert "--resume" in capsys.readouterr().err
    assert (saved / STATE_FILE).read_text() == "{}"


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["move", "ETH", "-8 pct"], "PCT"),
        (["move", "ETH", "-120%"], "PCT"),
        (["move", "ETH"], "PCT"),
        (["open", "perp", "ETH", "sideways", "10x", "1000"], "SIDE"),
        (["open", "perp", "ETH", "long", "ten", "1000"], "LEVERAGE"),
        (["open", "llamma", "ETH", "10", "--bands", "2"], "--bands"),
    ],
)
def test_bad_arguments_exit_2_naming_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], needle: str
) -> None:
    assert main(["sandbox", "--workdir", str(tmp_path), *argv]) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err
