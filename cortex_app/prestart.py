"""What runs before the console serves (`python -m cortex_app.prestart`, called by `make up`).

Each check turns one known fault into one line naming the problem and the setting to
change, exit status 2, nothing half-created:
  data dir  exists or can be made, and is writable          (CORTEX_DATA_DIR)
  database  answers, then migrated to head with Alembic      (CORTEX_DB_URL)
  port      free to bind                                     (CORTEX_PORT)
  engine    reported, never fatal: the console starts without Docker and says so
  placement how model containers reach their files and the console reaches them (hosting.py):
            a wiring that cannot work (models dir not mounted from the host, mismatched
            CORTEX_MODELS_HOST_DIR, no network for a console in a container) is fatal
"""

from __future__ import annotations

import contextlib
import errno
import socket
import sys
import tempfile
from pathlib import Path

import sqlalchemy as sa

from cortex_app import secretbox
from cortex_app.runtime.docker import engine_info
from cortex_app.settings import Settings, SettingsError, load_settings, redact_url

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class PrestartError(Exception):
    """A fault that stops the console from starting; the message says what to change."""


def check_data_dir(data_dir: Path) -> None:
    """Fail unless `data_dir` is, or can be made, a writable folder. Creates nothing."""
    existing = data_dir
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise PrestartError(f"data dir {data_dir} cannot be created: {existing} is not a folder; "
                            "set CORTEX_DATA_DIR to a writable folder")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        raise PrestartError(f"data dir {data_dir} is not writable ({existing}: {exc.strerror or exc}); "
                            "set CORTEX_DATA_DIR to a writable folder") from None


@contextlib.contextmanager
def _database(db_url: str):
    """A connection to the database; PrestartError naming CORTEX_DB_URL when there is none."""
    engine = sa.create_engine(db_url, poolclass=sa.pool.NullPool,
                              connect_args={"connect_timeout": 5} if "psycopg" in db_url else {})
    try:
        with engine.connect() as conn:
            yield conn
    except sa.exc.OperationalError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        raise PrestartError(f"cannot reach the database at {redact_url(db_url)} ({reason}); "
                            "check CORTEX_DB_URL") from None
    except sa.exc.ArgumentError as exc:
        raise PrestartError(f"CORTEX_DB_URL is not a usable database URL ({exc}); "
                            "use e.g. postgresql+psycopg://user:pass@host/db") from None
    except ModuleNotFoundError as exc:
        raise PrestartError(f"no driver for {redact_url(db_url)} ({exc.name} is not installed); "
                            "check CORTEX_DB_URL (PostgreSQL: postgresql+psycopg://...)") from None
    finally:
        engine.dispose()


def check_database(db_url: str) -> None:
    with _database(db_url) as conn:
        conn.execute(sa.text("SELECT 1"))


def migrate(db_url: str) -> tuple[str | None, str]:
    """Bring the schema to head; returns (revision before, revision after)."""
    from alembic import command
    from alembic.config import Config
    from alembic.runtime.migration import MigrationContext

    with _database(db_url) as conn:
        before = MigrationContext.configure(conn).get_current_revision()
        cfg = Config(str(PROJECT_ROOT / "alembic.ini"))
        cfg.attributes["connection"] = conn
        cfg.attributes["configure_logging"] = False
        command.upgrade(cfg, "head")
        after = MigrationContext.configure(conn).get_current_revision()
    return before, after or ""


def check_port(port: int, host: str = "0.0.0.0") -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PrestartError(f"port {port} is already in use (another console or program holds it); "
                                    "stop it (`make down`) or set CORTEX_PORT to a free port") from None
            raise PrestartError(f"cannot listen on {host}:{port} ({exc.strerror}); set CORTEX_PORT "
                                "(or CORTEX_LISTEN)") from None


def seed_admin(settings: Settings, env=None) -> str:
    """First run: the admin account from CORTEX_ADMIN_USER / CORTEX_ADMIN_PASSWORD, taken once
    (ignored as soon as any admin exists). Without them, the console asks in the browser, for
    a one-time setup code made here and printed (so only who sees this output can claim it)."""
    import os

    from cortex_app import auth
    from cortex_app.db import make_engine

    env = os.environ if env is None else env
    user, password = env.get("CORTEX_ADMIN_USER", "").strip(), env.get("CORTEX_ADMIN_PASSWORD", "")
    db = make_engine(settings.db_url)
    try:
        if auth.admin_exists(db):
            auth.forget_setup_codes(db)
            return "account exists" + (" (CORTEX_ADMIN_USER/PASSWORD ignored)" if user else "")
        if not user and not password:
            code = auth.new_setup_code(db)
            return (f"none yet: open {settings.public_url}/setup and create it with the one-time "
                    f"setup code {code}")
        try:
            auth.create_admin(db, user, password)
        except auth.AuthError as exc:
            raise PrestartError(f"cannot create the first admin ({exc}); fix CORTEX_ADMIN_USER / "
                                "CORTEX_ADMIN_PASSWORD") from None
        return f"created {user!r} from CORTEX_ADMIN_USER"
    finally:
        db.dispose()


def run(settings: Settings, *, say=print) -> None:
    # Every check that can fail runs before anything is created on disk or in the database.
    check_data_dir(settings.data_dir)
    check_port(settings.port, settings.listen)
    info = engine_info(settings.docker_host)
    placement = check_placement(settings) if info.reachable else None
    if settings.db_kind != "sqlite":
        check_database(settings.db_url)  # a SQLite file is made in the data dir, below
    settings.data_dir.mkdir(parents=True, exist_ok=True)  # the key file (and SQLite's database) live there
    try:
        key_from = secretbox.use(settings)  # before the migrations: they seal secrets
    except secretbox.SecretKeyError as exc:
        raise PrestartError(str(exc)) from None
    before, after = migrate(settings.db_url)
    say(f"data dir:  {settings.data_dir}")
    say(f"secrets:   sealed with the key from {key_from}")
    state = "up to date" if before == after else f"migrated {before or 'empty'} -> {after}"
    say(f"database:  {settings.db_kind} at {redact_url(settings.db_url)} (schema {after}, {state})")
    say(f"listen:    {settings.listen}:{settings.port}"
        + (" (every interface: CORTEX_LISTEN=127.0.0.1 keeps it to this host)" if settings.listen == "0.0.0.0" else ""))
    say(f"admin:     {seed_admin(settings)}")
    if info.reachable:
        say(f"docker:    engine {info.version} at {info.host}")
        say(f"models:    {placement.describe()}")
    else:
        say(f"docker:    WARNING {info.error}. The console starts anyway and shows this on its pages.")


def check_placement(settings: Settings):
    """Work out (and set up: the shared network) how model containers are wired to this
    console; PrestartError naming the setting when that cannot work."""
    from cortex_app.hosting import PlacementError, resolve
    from cortex_app.runtime.docker import DockerRuntime, DockerRuntimeError

    runtime = DockerRuntime(settings.docker_host)
    try:
        return resolve(settings, runtime)
    except (PlacementError, DockerRuntimeError) as exc:
        raise PrestartError(str(exc)) from None
    finally:
        runtime.close()


def main() -> int:
    try:
        run(load_settings(), say=lambda line: print(f"cortex: {line}", flush=True))
    except (SettingsError, PrestartError) as exc:
        print(f"cortex: error: {exc}", file=sys.stderr, flush=True)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
