"""The server's Fernet key, which encrypts project secrets at rest.

CISERVER_SECRET_KEY wins when set; otherwise the key lives in the data dir's `secret.key`, made on
first use. Every process of `ciserver up` shares the data dir, so they must all end up with the same
key even when several start at once: the file appears complete, in one step, or not at all.
"""

from __future__ import annotations

import base64
import os
import secrets
from functools import lru_cache
from pathlib import Path

from cryptography.fernet import Fernet

from ciserver.config import Settings

_HOW = "a Fernet key is 32 bytes in url-safe base64 (44 characters); make one with `ciserver secret keygen`"


class SecretKeyError(ValueError):
    """The server's key is missing or malformed; the message says where it came from, never the key."""


def load_fernet(settings: Settings) -> Fernet:
    """The Fernet of CISERVER_SECRET_KEY, else of the key file (created on first use)."""
    if settings.secret_key is not None:
        return _from_setting(settings.secret_key.strip())
    return _from_file(settings.secret_key_file)


def new_key() -> str:
    return Fernet.generate_key().decode()


# A Fernet token: version 0x80, an 8-byte time, a 16-byte IV, whole AES blocks, a 32-byte HMAC.
_VERSION, _FIXED, _BLOCK = 0x80, 1 + 8 + 16 + 32, 16


def is_fernet_token(value: str) -> bool:
    """Whether `value` has the shape of a Fernet token (of any key): how a stored secret is told
    from the clear text an earlier release kept, without a key that can read it."""
    try:
        raw = base64.b64decode(value.encode("ascii"), altchars=b"-_", validate=True)
    except (ValueError, UnicodeEncodeError):
        return False
    return len(raw) >= _FIXED + _BLOCK and raw[0] == _VERSION and (len(raw) - _FIXED) % _BLOCK == 0


@lru_cache(maxsize=8)
def _from_setting(key: str) -> Fernet:
    try:
        return Fernet(key)
    except (ValueError, TypeError):
        raise SecretKeyError(f"CISERVER_SECRET_KEY is not a valid Fernet key: {_HOW}") from None


@lru_cache(maxsize=8)
def _from_file(path: Path) -> Fernet:
    if not path.exists():
        _create(path)
    key = path.read_bytes().strip()
    try:
        return Fernet(key)
    except (ValueError, TypeError):
        raise SecretKeyError(
            f"{path} does not hold a valid Fernet key ({_HOW}); "
            "restore it from a backup: secrets already set can only be read with the key they were set with"
        ) from None


def _create(path: Path) -> None:
    """Write a new key beside `path` (0600, O_EXCL), then hard-link it into place.

    link() fails when `path` exists, so of several processes starting at once exactly one key wins
    and nobody ever reads a half-written file; the losers read the winner's.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, Fernet.generate_key() + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass  # another process was first: its key is the one everybody uses
    finally:
        tmp.unlink(missing_ok=True)
