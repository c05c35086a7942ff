"""`keeper keystore new|import|address`: the encrypted JSON keystore the daemon loads with `key.keystore` +
`key.password_file` (eth-account, scrypt KDF).

The password comes from `--password-file` (its first line, trailing newline dropped: what the daemon reads)
or an interactive prompt, asked twice when a keystore is written. `import` reads the private key from the
environment variable named by `--key-env` or a hidden prompt, never from the command line. Files are created
mode 600 and never overwritten without `--force`. Only the address is ever printed.
"""

from __future__ import annotations

import argparse
import json
import os
import stat
import sys
from pathlib import Path
from typing import Any

NAME = "keystore"
HELP = "create, import or inspect the encrypted keystore the daemon uses (key.keystore)"

EXIT_OK = 0
EXIT_USAGE = 2


class UsageError(Exception):
    """Bad input: exit 2 with this message (never containing key material)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="keystore_command", metavar="{new,import,address}", required=True)
    new = sub.add_parser("new", help="generate a fresh key and write it encrypted; prints its address")
    imp = sub.add_parser("import", help="encrypt an existing private key (from --key-env or a hidden prompt)")
    for p in (new, imp):
        p.add_argument("file", type=Path, help="keystore file to write (created with mode 600)")
        p.add_argument("--password-file", type=Path, help="file holding the password (else asked twice on the terminal)")
        p.add_argument("--force", action="store_true", help="overwrite an existing file")
    imp.add_argument(
        "--key-env",
        metavar="NAME",
        help="environment variable holding the hex private key (else asked on the terminal, without echo)",
    )
    addr = sub.add_parser("address", help="print a keystore's address; with --password-file also check it decrypts")
    addr.add_argument("file", type=Path, help="keystore file")
    addr.add_argument("--password-file", type=Path, help="verify that this password decrypts the keystore")


def run(args: argparse.Namespace) -> int:
    try:
        if args.keystore_command == "address":
            address = _address(args.file, args.password_file)
        else:
            address = _write(args)
    except UsageError as exc:
        print(f"keeper keystore: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("keeper keystore: interrupted; nothing written", file=sys.stderr)
        return EXIT_USAGE
    print(address)
    return EXIT_OK


# ---- password and key input --------------------------------------------------------------------------


def _read_password_file(path: Path) -> str:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise UsageError(f"--password-file: {path} not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"--password-file: cannot read {path} ({type(exc).__name__})") from None
    try:
        if stat.S_IMODE(path.stat().st_mode) & (stat.S_IRWXG | stat.S_IRWXO):
            print(
                f"keeper keystore: warning: {path} is readable by group/others; the daemon refuses it: chmod 600 {path}",
                file=sys.stderr,
            )
    except OSError:
        pass
    return text.rstrip("\r\n")  # as keeper.keys.load_signer reads it


def _prompt(label: str) -> str:
    if not sys.stdin.isatty():
        raise UsageError(f"no terminal to ask for the {label}: use --password-file FILE (and --key-env NAME for import)")
    import getpass  # noqa: PLC0415

    return getpass.getpass(f"{label}: ")


def _password(args: argparse.Namespace, *, confirm: bool) -> str:
    if args.password_file is not None:
        password = _read_password_file(args.password_file)
        if confirm and not password:
            raise UsageError(f"--password-file: {args.password_file} is empty; a keystore needs a password")
        return password
    if not sys.stdin.isatty():
        raise UsageError("no terminal to ask for the keystore password: use --password-file FILE")
    password = _prompt("keystore password")
    if confirm:
        if not password:
            raise UsageError("empty password; a keystore needs a password")
        if _prompt("repeat the password") != password:
            raise UsageError("the two passwords differ; nothing written")
    return password


def _private_key(key_env: str | None) -> bytes:
    from eth_account import Account  # noqa: PLC0415

    if key_env is not None:
        raw = os.environ.get(key_env, "")
        if not raw:
            raise UsageError(f"--key-env: environment variable {key_env} is not set or empty")
        where = f"--key-env: environment variable {key_env}"
    else:
        if not sys.stdin.isatty():
            raise UsageError("no terminal to ask for the private key: use --key-env NAME (an environment variable holding it)")
        raw = _prompt("private key (hex, input hidden)")
        where = "the private key entered"
    try:
        return bytes(Account.from_key(raw.strip()).key)
    except Exception:  # noqa: BLE001 - never echo the value
        raise UsageError(f"{where} is not a valid private key (64 hex digits, optional 0x)") from None


# ---- writing and reading ---------------------------------------------------------------------------------


def _write(args: argparse.Namespace) -> str:
    from eth_account import Account  # noqa: PLC0415

    path: Path = args.file
    _check_target(path, args.force)
    # the key first (it may be prompted for), then the password
    key = bytes(Account.create().key) if args.keystore_command == "new" else _private_key(args.key_env)
    password = _password(args, confirm=True)
    keyfile = Account.encrypt(key, password, kdf="scrypt")
    address = Account.from_key(key).address
    _write_private(path, json.dumps(keyfile).encode(), args.force)
    print(
        f"keeper keystore: wrote {path} (mode 600, scrypt) for {address}; keep the password: without it the key is lost",
        file=sys.stderr,
    )
    return address


def _check_target(path: Path, force: bool) -> None:
    if path.is_dir():
        raise UsageError(f"file: {path} is a directory; name a file inside it")
    if (path.exists() or path.is_symlink()) and not force:
        raise UsageError(f"file: {path} already exists; refusing to overwrite it (--force to replace it)")
    if not path.absolute().parent.is_dir():
        raise UsageError(f"file: folder {path.absolute().parent} does not exist")


def _write_private(path: Path, data: bytes, force: bool) -> None:
    """Create `path` with mode 600 (O_EXCL: never an existing file); with `force` write a 600 sibling and
    rename it over the old file, so no moment exists where the key is in a file others can read."""
    target = path
    if force:
        target = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise UsageError(f"file: {target} already exists; refusing to overwrite it (--force to replace it)") from None
    except OSError as exc:
        raise UsageError(f"file: cannot create {target}: {exc.strerror}") from None
    try:
        os.fchmod(fd, 0o600)  # whatever the umask
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if target != path:
            os.replace(target, path)
    except OSError as exc:
        if target != path:
            target.unlink(missing_ok=True)
        raise UsageError(f"file: cannot write {path}: {exc.strerror}") from None


def _load(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise UsageError(f"file: {path} not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UsageError(f"file: {path} is not a readable JSON keystore ({type(exc).__name__})") from None
    if not isinstance(data, dict) or not isinstance(data.get("crypto", data.get("Crypto")), dict):
        raise UsageError(f"file: {path} is not an encrypted JSON keystore (no crypto section)")
    return data


def _address(path: Path, password_file: Path | None) -> str:
    from eth_account import Account  # noqa: PLC0415
    from eth_utils import is_address, to_checksum_address  # noqa: PLC0415

    keyfile = _load(path)
    recorded = keyfile.get("address")
    stored = None
    if isinstance(recorded, str) and is_address(recorded if recorded.startswith("0x") else "0x" + recorded):
        stored = to_checksum_address(recorded if recorded.startswith("0x") else "0x" + recorded)
    if password_file is None:
        if stored is None:
            raise UsageError(f"file: {path} does not record its address; give --password-file to decrypt it")
        return stored
    password = _read_password_file(password_file)
    try:
        key = Account.decrypt(keyfile, password)
    except ValueError:
        raise UsageError(f"--password-file: wrong password for {path} (or a corrupt keystore)") from None
    except Exception as exc:  # noqa: BLE001 - unsupported KDF etc.; never echo contents
        raise UsageError(f"file: cannot decrypt {path} ({type(exc).__name__})") from None
    address = str(Account.from_key(key).address)
    if stored is not None and stored != address:
        raise UsageError(f"file: {path} records address {stored} but decrypts to {address}")
    return address
