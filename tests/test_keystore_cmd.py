"""`keeper keystore new|import|address` as an operator runs it (subprocess `python -m keeper keystore ...`):
the address printed is the keystore's, the file is mode 600 and decrypts with the password, a known key
imports to its address, the daemon's key loader accepts the file, a wrong password is exit 2, nothing is
overwritten without --force, no terminal and no password file is exit 2, and no key material is printed."""

from __future__ import annotations

import json
import os
import pty
import select
import stat
import subprocess
import sys
import time
from pathlib import Path

from eth_account import Account

from keeper.config import KeyConfig
from keeper.devtools.accounts import ANVIL_ADDRESSES, ANVIL_KEYS
from keeper.keys import load_signer

PASSWORD = "correct horse battery staple"
KNOWN_KEY = ANVIL_KEYS[3]
KNOWN_ADDRESS = ANVIL_ADDRESSES[3]


def keystore(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "keeper", "keystore", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, **(env or {})},
        stdin=subprocess.DEVNULL,  # no terminal: every secret must come from a file or the environment
        umask=0o022,  # a plain open() would leave the key readable by everyone (644)
        timeout=120,
    )


def password_file(tmp: Path, text: str = PASSWORD, name: str = "password") -> Path:
    path = tmp / name
    path.write_text(text + "\n")
    path.chmod(0o600)
    return path


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def assert_no_key_material(proc: subprocess.CompletedProcess, key_hex: str, *secrets: str) -> None:
    out = proc.stdout + proc.stderr
    bare = key_hex.lower().removeprefix("0x")
    assert bare not in out.lower(), "private key printed"
    for s in secrets:
        assert s not in out, "secret printed"


def test_new_prints_the_keystores_address_mode_600_and_it_decrypts(tmp_path):
    pw = password_file(tmp_path)
    proc = keystore("new", "ks.json", "--password-file", str(pw), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    printed = proc.stdout.strip()
    path = tmp_path / "ks.json"
    assert mode(path) == 0o600
    keyfile = json.loads(path.read_text())
    assert keyfile["crypto"]["kdf"] == "scrypt"
    assert Account.from_key(Account.decrypt(keyfile, PASSWORD)).address == printed
    assert "0x" + keyfile["address"].lower() == printed.lower()
    key = "0x" + bytes(Account.decrypt(keyfile, PASSWORD)).hex()
    assert_no_key_material(proc, key, PASSWORD)
    # the daemon's loader accepts it as written
    assert load_signer(KeyConfig(keystore=path, password_file=pw)).address == printed


def test_import_of_a_known_key_from_the_environment(tmp_path):
    pw = password_file(tmp_path)
    proc = keystore(
        "import", "imported.json", "--key-env", "MY_KEY", "--password-file", str(pw), cwd=tmp_path, env={"MY_KEY": KNOWN_KEY}
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == KNOWN_ADDRESS
    assert_no_key_material(proc, KNOWN_KEY, PASSWORD)
    path = tmp_path / "imported.json"
    assert mode(path) == 0o600
    assert load_signer(KeyConfig(keystore=path, password_file=pw)).address == KNOWN_ADDRESS

    shown = keystore("address", "imported.json", cwd=tmp_path)
    assert shown.returncode == 0 and shown.stdout.strip() == KNOWN_ADDRESS
    verified = keystore("address", "imported.json", "--password-file", str(pw), cwd=tmp_path)
    assert verified.returncode == 0, verified.stderr
    assert verified.stdout.strip() == KNOWN_ADDRESS
    assert_no_key_material(verified, KNOWN_KEY, PASSWORD)


def test_wrong_password_bad_key_and_missing_env_are_exit_2(tmp_path):
    pw = password_file(tmp_path)
    assert (
        keystore("import", "ks.json", "--key-env", "K", "--password-file", str(pw), cwd=tmp_path, env={"K": KNOWN_KEY}).returncode
        == 0
    )
    wrong = password_file(tmp_path, "not the password", name="wrong")
    proc = keystore("address", "ks.json", "--password-file", str(wrong), cwd=tmp_path)
    assert proc.returncode == 2
    assert "wrong password" in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stdout == ""
    assert_no_key_material(proc, KNOWN_KEY, PASSWORD, "not the password")

    bad_key = "0x" + "zz" * 32
    proc = keystore("import", "bad.json", "--key-env", "K", "--password-file", str(pw), cwd=tmp_path, env={"K": bad_key})
    assert proc.returncode == 2 and "--key-env" in proc.stderr and "zz" * 32 not in proc.stderr + proc.stdout
    proc = keystore("import", "bad.json", "--key-env", "UNSET_KEY_VAR", "--password-file", str(pw), cwd=tmp_path)
    assert proc.returncode == 2 and "UNSET_KEY_VAR" in proc.stderr
    assert not (tmp_path / "bad.json").exists()


def test_no_terminal_and_no_password_file_is_exit_2_and_writes_nothing(tmp_path):
    proc = keystore("new", "ks.json", cwd=tmp_path)
    assert proc.returncode == 2
    assert "--password-file" in proc.stderr and "Traceback" not in proc.stderr
    proc = keystore("import", "ks.json", "--password-file", str(password_file(tmp_path)), cwd=tmp_path)
    assert proc.returncode == 2 and "--key-env" in proc.stderr  # the key is never taken from argv
    assert sorted(p.name for p in tmp_path.iterdir()) == ["password"]


def test_never_overwrites_without_force(tmp_path):
    pw = password_file(tmp_path)
    path = tmp_path / "ks.json"
    path.write_text("precious")
    path.chmod(0o644)
    proc = keystore("new", "ks.json", "--password-file", str(pw), cwd=tmp_path)
    assert proc.returncode == 2 and "--force" in proc.stderr
    assert path.read_text() == "precious"
    proc = keystore(
        "import", "ks.json", "--key-env", "K", "--password-file", str(pw), "--force", cwd=tmp_path, env={"K": KNOWN_KEY}
    )
    assert proc.returncode == 0, proc.stderr
    assert mode(path) == 0o600  # replaced by a new 600 file, not written into the old 644 one
    assert Account.from_key(Account.decrypt(json.loads(path.read_text()), PASSWORD)).address == KNOWN_ADDRESS
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ks.json", "password"]  # no temporary left


def _read_until(fd: int, needle: bytes, seen: bytearray, deadline: float) -> None:
    while needle not in seen:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"timed out waiting for {needle!r}; got {bytes(seen)!r}"
        ready, _, _ = select.select([fd], [], [], remaining)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # the child closed the terminal
                chunk = b""
            assert chunk, f"terminal closed before {needle!r}; got {bytes(seen)!r}"
            seen += chunk


def test_import_prompts_on_a_terminal_without_echo(tmp_path):
    """No --key-env and no --password-file: the key and the password (twice) are asked on the terminal,
    with echo off; nothing typed appears in what the terminal shows."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "keeper", "keystore", "import", "tty.json"],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        cwd=tmp_path,
        start_new_session=True,  # no controlling terminal: getpass uses this pty as stdin
    )
    os.close(slave)
    seen = bytearray()
    deadline = time.monotonic() + 60
    try:
        _read_until(master, b"private key", seen, deadline)
        os.write(master, KNOWN_KEY.encode() + b"\n")
        _read_until(master, b"keystore password:", seen, deadline)
        os.write(master, PASSWORD.encode() + b"\n")
        _read_until(master, b"repeat the password:", seen, deadline)
        os.write(master, PASSWORD.encode() + b"\n")
        _read_until(master, KNOWN_ADDRESS.encode(), seen, deadline)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    shown = seen.decode(errors="replace")
    assert KNOWN_KEY.removeprefix("0x") not in shown and PASSWORD not in shown
    path = tmp_path / "tty.json"
    assert mode(path) == 0o600
    assert Account.from_key(Account.decrypt(json.loads(path.read_text()), PASSWORD)).address == KNOWN_ADDRESS


def test_prompted_passwords_must_match(tmp_path):
    typed = ("secret one", "secret two")
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "keeper", "keystore", "new", "k.json"],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        cwd=tmp_path,
        start_new_session=True,
    )
    os.close(slave)
    seen = bytearray()
    deadline = time.monotonic() + 60
    try:
        _read_until(master, b"keystore password:", seen, deadline)
        os.write(master, typed[0].encode() + b"\n")
        _read_until(master, b"repeat the password:", seen, deadline)
        os.write(master, typed[1].encode() + b"\n")
        _read_until(master, b"differ", seen, deadline)
        assert proc.wait(timeout=60) == 2
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    assert not (tmp_path / "k.json").exists()
