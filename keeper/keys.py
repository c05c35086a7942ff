"""Loading the keeper's signing key: from an env var named in the config, or from an encrypted
JSON keystore plus a password file. The key is registered for log redaction at once and never
appears in any message, repr or metric."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from eth_account import Account
from eth_account.signers.local import LocalAccount

from keeper.config import KeyConfig
from keeper.log import register_secret


class KeyLoadError(Exception):
    pass


class Signer:
    """Signs transactions; exposes only the address."""

    __slots__ = ("_account", "address")

    def __init__(self, account: LocalAccount):
        self._account = account
        self.address: str = account.address

    def sign(self, tx: dict) -> tuple[bytes, str]:
        """Sign a transaction dict → (raw bytes, 0x hash)."""
        signed = self._account.sign_transaction(tx)
        return bytes(signed.raw_transaction), "0x" + bytes(signed.hash).hex()

    def __repr__(self) -> str:
        return f"Signer({self.address})"

    __str__ = __repr__


def _check_private_file(path: Path, what: str) -> None:
    try:
        st = path.stat()
    except FileNotFoundError:
        raise KeyLoadError(f"{what} not found: {path}") from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyLoadError(
            f"{what} {path} is accessible by group/others (mode {stat.S_IMODE(st.st_mode):o}); run: chmod 600 {path}"
        )


def load_signer(cfg: KeyConfig, environ: dict[str, str] | None = None) -> Signer:
    env = os.environ if environ is None else environ
    if cfg.keystore is not None:
        if cfg.password_file is None:  # config validation requires it with a keystore
            raise KeyLoadError("key.keystore is set but key.password_file is not")
        _check_private_file(cfg.keystore, "keystore")
        _check_private_file(cfg.password_file, "password file")
        password = cfg.password_file.read_text().rstrip("\r\n")
        register_secret(password)
        try:
            keyfile = json.loads(cfg.keystore.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise KeyLoadError(f"keystore {cfg.keystore} is not valid JSON") from None
        try:
            key = Account.decrypt(keyfile, password)
        except ValueError:
            raise KeyLoadError(f"keystore {cfg.keystore}: wrong password or corrupt keystore") from None
        except Exception as exc:  # noqa: BLE001 - unsupported KDF etc.; never echo contents
            raise KeyLoadError(f"keystore {cfg.keystore}: cannot decrypt ({type(exc).__name__})") from None
        register_secret("0x" + bytes(key).hex())
        account = Account.from_key(key)
    else:
        name = cfg.private_key_env
        raw = env.get(name or "", "")
        if not raw:
            raise KeyLoadError(f"environment variable {name} is not set (it must hold the keeper's private key)")
        register_secret(raw)
        try:
            account = Account.from_key(raw.strip())
        except Exception:  # noqa: BLE001 - never echo the value
            raise KeyLoadError(f"environment variable {name} does not hold a valid private key") from None
    if cfg.address is not None and account.address != cfg.address:
        raise KeyLoadError(f"the key's address {account.address} does not match key.address {cfg.address}")
    return Signer(account)
