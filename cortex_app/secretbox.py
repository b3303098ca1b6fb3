"""Secrets at rest: webhook signing secrets and HF tokens are sealed with Fernet (from
`cryptography`: AES-128-CBC with an HMAC-SHA256) before they reach the database, which then
holds only `fernet:<token>`.

The key: CORTEX_SECRET_KEY (any string of 32 characters or more; consoles sharing one database
need the same), else the file `secret.key` in the data dir, made 0600 on the first start. Who
has the database without the key has no secret. Lose the key and the sealed values are lost:
the console says so (a webhook delivery fails with "rotate its secret"; an HF token must be
entered again) and goes on; back up the data dir (README).

`Sealed` is the column type: the ORM reads and writes clear text, the database sees only
sealed values. The process's key is loaded once at start (`use`), before the database is.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import secrets
import stat
import threading
from pathlib import Path
from typing import Optional

import sqlalchemy as sa
from cryptography.fernet import Fernet, InvalidToken

from cortex_app.settings import MIN_SECRET_KEY, Settings

PREFIX = "fernet:"
KEY_FILE = "secret.key"
log = logging.getLogger(__name__)
_fernet: Optional[Fernet] = None
_warned: set[str] = set()
_lock = threading.Lock()


class SecretKeyError(RuntimeError):
    """No usable key; the message says what to change."""


def fernet_for(material: str) -> Fernet:
    """The Fernet key derived from a key string (CORTEX_SECRET_KEY's, or the key file's)."""
    return Fernet(base64.urlsafe_b64encode(hashlib.sha256(b"cortex-secrets:" + material.encode()).digest()))


def key_file(settings: Settings) -> Path:
    return settings.data_dir / KEY_FILE


def load_key(settings: Settings) -> tuple[str, str]:
    """(the key string, where it came from). Without CORTEX_SECRET_KEY, the key file: made
    (0600, atomically: two consoles starting at once read the same key) when missing."""
    if settings.secret_key:
        return settings.secret_key, "CORTEX_SECRET_KEY"
    path = key_file(settings)
    if not path.exists():
        _make_key_file(path)
    try:
        mode = path.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            os.chmod(path, 0o600)  # readable by others: not any more
        text = path.read_text().strip()
    except OSError as exc:
        raise SecretKeyError(f"cannot read the key file {path} ({exc.strerror}); set CORTEX_SECRET_KEY "
                             "or fix the file's owner") from None
    if len(text) < MIN_SECRET_KEY:
        raise SecretKeyError(f"the key file {path} holds no usable key (under {MIN_SECRET_KEY} characters); "
                             "restore it from your backup of the data dir")
    return text, str(path)


def _make_key_file(path: Path) -> None:
    """Written whole to a file of its own, then linked into place: a console starting at the
    same moment reads either no file or the whole key, never half of one, and of two starts
    the first link wins (the other's key is dropped)."""
    tmp = path.with_name(f".{KEY_FILE}.{os.getpid()}.{threading.get_ident()}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(32) + "\n")
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
    except OSError as exc:
        raise SecretKeyError(f"cannot make the key file {path} ({exc.strerror}); make the data dir "
                             "writable, or set CORTEX_SECRET_KEY") from None
    finally:
        tmp.unlink(missing_ok=True)


def loaded() -> bool:
    return _fernet is not None


PR_SET_DUMPABLE, PR_GET_DUMPABLE = 4, 3


def protect_process() -> bool:
    """Make this process not dumpable (prctl PR_SET_DUMPABLE 0): no core dump holds its secrets,
    and its memory, its memory files (the TLS keys of hosts and ingresses) and its /proc entries
    are root's only, not every process of its user's. False where the kernel offers no prctl."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def use(settings: Settings) -> str:
    """Load this process's key; returns where it came from (for the start-up lines)."""
    global _fernet
    material, where = load_key(settings)
    with _lock:
        _fernet = fernet_for(material)
        _warned.clear()  # a new key: say again what it cannot read
    return where


def _box() -> Fernet:
    if _fernet is None:
        raise SecretKeyError("no secret key loaded (secretbox.use runs at the console's start)")
    return _fernet


def seal(value: str) -> str:
    return PREFIX + _box().encrypt(value.encode()).decode()


def unseal(value: str, what: str = "a secret") -> Optional[str]:
    """The clear text, or None when the value was sealed with another key (logged once, without
    the value)."""
    try:
        if not value.startswith(PREFIX):
            raise InvalidToken
        return _box().decrypt(value[len(PREFIX):].encode()).decode()
    except InvalidToken:
        if what not in _warned:
            _warned.add(what)
            log.warning("%s in the database cannot be read with this console's secret key (CORTEX_SECRET_KEY "
                        "or the data dir's %s changed); enter it again", what, KEY_FILE)
        return None


class Sealed(sa.types.TypeDecorator):
    """A string column stored sealed (see the module's docstring)."""

    impl = sa.String(1024)
    cache_ok = True

    def __init__(self, what: str = "a secret"):
        super().__init__()
        self.what = what

    def process_bind_param(self, value, dialect):
        return None if value is None else seal(value)

    def process_result_value(self, value, dialect):
        return None if value is None else unseal(value, self.what)


class SealedText(Sealed):
    """A sealed column for long secrets (PEM keys and certificates)."""

    impl = sa.Text()
    cache_ok = True
