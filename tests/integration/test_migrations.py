"""The schema exists only through Alembic: upgrade head on an empty database, the models and
the migrated schema agree, downgrade base leaves nothing. On SQLite and on PostgreSQL."""

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlmodel import SQLModel

import cortex_app.models  # noqa: F401
from tests.conftest import ROOT, record_at


def _config(conn) -> Config:
    cfg = Config(str(ROOT / "alembic.ini"))
    cfg.attributes["connection"] = conn
    cfg.attributes["configure_logging"] = False
    return cfg


def _roundtrip(url: str) -> None:
    engine = sa.create_engine(url)
    head = ScriptDirectory.from_config(Config(str(ROOT / "alembic.ini"))).get_current_head()
    with engine.connect() as conn:
        command.upgrade(_config(conn), "head")
        assert MigrationContext.configure(conn).get_current_revision() == head
        tables = set(sa.inspect(conn).get_table_names())
        assert {"model", "model_event", "alembic_version"} <= tables
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), SQLModel.metadata)
        assert diff == [], f"models.py and the migrations disagree: {diff}"
        command.downgrade(_config(conn), "base")
        assert set(sa.inspect(conn).get_table_names()) <= {"alembic_version"}
        command.upgrade(_config(conn), "head")  # and back up again, as a later upgrade would
        assert MigrationContext.configure(conn).get_current_revision() == head
    engine.dispose()


def test_sqlite_upgrade_downgrade(tmp_path):
    _roundtrip(f"sqlite:///{tmp_path}/cortex.db")


def test_postgresql_upgrade_downgrade(fresh_postgres_db):
    _roundtrip(fresh_postgres_db)


def test_one_linear_history():
    script = ScriptDirectory.from_config(Config(str(ROOT / "alembic.ini")))
    assert len(script.get_heads()) == 1


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_times_are_aware_after_migration(kind, tmp_path, request):
    from datetime import timezone

    from sqlmodel import Session, select

    from cortex_app.models import Engine, Model

    url = f"sqlite:///{tmp_path}/c.db" if kind == "sqlite" else request.getfixturevalue("fresh_postgres_db")
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        command.upgrade(_config(conn), "head")
    with Session(engine) as s:
        s.add(Model(name="a", served_name="a", engine=Engine.VLLM, image="i", source="org/a",
                    gpu_ids=[0, 1], extra_args=["--seed", "1"], extra_env={"A": "b"}))
        s.commit()
    with Session(engine) as s:
        m = s.exec(select(Model)).one()
        assert m.created_at.tzinfo is not None and m.created_at.utcoffset().total_seconds() == 0
        assert m.created_at.astimezone(timezone.utc) == m.created_at
        assert (m.gpu_ids, m.extra_args, m.extra_env, m.engine) == ([0, 1], ["--seed", "1"], {"A": "b"}, Engine.VLLM)
    engine.dispose()


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_a_model_id_is_never_given_twice(kind, tmp_path, request):
    """Found by the chaos harness: on SQLite a model made right after the newest one was deleted
    got its id, and with it that model's event history. A database made before the fix keeps
    its ids through the migration and stops reusing them."""
    from cortex_app.models import Engine, Model

    url = f"sqlite:///{tmp_path}/c.db" if kind == "sqlite" else request.getfixturevalue("fresh_postgres_db")
    engine = sa.create_engine(url)

    def add(name):
        """A model row with the columns the database has at its revision (newer ones left out)."""
        m = Model(name=name, served_name=name, engine=Engine.LLAMACPP, image="i", source="a.gguf")
        table = sa.Table("model", sa.MetaData(), autoload_with=engine)
        values = {c.name: getattr(m, c.name) for c in table.columns if c.name != "id"}
        with engine.begin() as conn:
            return conn.execute(sa.insert(table).values(**values)).inserted_primary_key[0]

    with engine.connect() as conn:
        command.upgrade(_config(conn), "0007")
    first, second = add("a"), add("b")
    with engine.connect() as conn:
        command.upgrade(_config(conn), "head")
    with engine.begin() as conn:
        assert conn.execute(sa.text("SELECT id FROM model ORDER BY id")).scalars().all() == [first, second]
        conn.execute(sa.text("DELETE FROM model WHERE id = :i"), {"i": second})
    assert add("c") > second
    engine.dispose()


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_the_longest_caller_name_fits_the_actor_column(kind, tmp_path, request):
    """A 64-character username or token name makes a 70-character actor; PostgreSQL refused it
    (500 on every action of that caller) until 0009."""
    from sqlmodel import Session

    from cortex_app.models import Engine, Model, ModelEvent, ModelState

    url = f"sqlite:///{tmp_path}/c.db" if kind == "sqlite" else request.getfixturevalue("fresh_postgres_db")
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        command.upgrade(_config(conn), "head")
    actor = "token:" + "t" * 64
    with Session(engine) as s:
        m = Model(name="a", served_name="a", engine=Engine.LLAMACPP, image="i", source="a.gguf")
        s.add(m)
        s.commit()
        s.add(ModelEvent(model_id=m.id, model_name="a", from_state=ModelState.STOPPED, to_state=ModelState.STARTING,
                         actor=actor))
        s.commit()
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT actor FROM model_event")).scalars().all() == [actor]
    engine.dispose()


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_tokens_made_before_scopes_become_read_tokens(kind, tmp_path, request):
    """Before 0012 any token could do everything an admin can over HTTP; the Settings page
    offered them for scripts and monitoring, so that is what they keep: read."""
    from cortex_app import auth
    from cortex_app.models import TokenScope

    url = f"sqlite:///{tmp_path}/c.db" if kind == "sqlite" else request.getfixturevalue("fresh_postgres_db")
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        command.upgrade(_config(conn), "0011")
    token = "ctx_made-before-scopes"
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO api_token (name, token_hash, created_at) VALUES ('old', :h, :t)"),
                     {"h": auth._token_hash(token), "t": cortex_app.models.utcnow()})
    with engine.connect() as conn:
        command.upgrade(_config(conn), "head")
    assert auth.api_token_caller(engine, token) == auth.TokenCaller("old", TokenScope.READ)
    # Going back, a token could do everything again: only never-expiring admin tokens stay.
    for scope, days in (("operate", 0), ("admin", 0), ("admin", 7)):
        auth.create_api_token(engine, f"{scope}-{days}", scope, days)
    with engine.connect() as conn:
        command.downgrade(_config(conn), "0011")
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT name FROM api_token")).scalars().all() == ["admin-0"]
    engine.dispose()


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_secrets_in_clear_are_sealed_by_the_upgrade_and_back_by_the_downgrade(kind, tmp_path, request):
    from sqlmodel import Session

    from cortex_app import webhooks
    from cortex_app.models import utcnow

    url = f"sqlite:///{tmp_path}/c.db" if kind == "sqlite" else request.getfixturevalue("fresh_postgres_db")
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        command.upgrade(_config(conn), "0012")
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO webhook_endpoint (url, secret, event_types, payload_format, enabled,"
                             " created_at) VALUES ('http://x/', 'whsec_clear', '[]', 'standard', true, :t)"),
                     {"t": cortex_app.models.utcnow()})
        conn.execute(sa.text("INSERT INTO model (name, served_name, engine, image, source, device, extra_args,"
                             " extra_env, hf_token, embeddings, enforce_eager, trust_remote_code, startup_timeout_s,"
                             " notes, state, state_reason, health, consecutive_failures, probe_history,"
                             " start_on_boot, restart_on_failure, restart_max_attempts, restart_attempts,"
                             " created_at, updated_at) VALUES ('v', 'v', 'vllm', 'i', 'o/m', 'cpu', '[]', '{}',"
                             " 'hf_clear_token', false, false, false, 600, '', 'stopped', '', 'unknown', 0, '[]',"
                             " false, false, 3, 0, :t, :t)"), {"t": utcnow()})
    with engine.connect() as conn:
        command.upgrade(_config(conn), "head")
    with engine.connect() as conn:
        stored = [conn.execute(sa.text(f"SELECT {c} FROM {t}")).scalar_one()
                  for t, c in (("webhook_endpoint", "secret"), ("model", "hf_token"))]
    assert all(v.startswith("fernet:") and "clear" not in v for v in stored), stored
    assert webhooks.get_endpoint(engine, 1).secret == "whsec_clear"
    with Session(engine) as s:
        assert s.exec(sa.select(cortex_app.models.Model)).scalar_one().hf_token == "hf_clear_token"
    with engine.connect() as conn:
        command.downgrade(_config(conn), "0012")
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT secret FROM webhook_endpoint")).scalar_one() == "whsec_clear"
        assert conn.execute(sa.text("SELECT hf_token FROM model")).scalar_one() == "hf_clear_token"
    engine.dispose()


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_usage_recorded_before_the_hourly_sums_is_summed_by_the_upgrade(kind, tmp_path, request):
    """0016 fills usage_hour from the records already there, with the hour written exactly as
    the meter writes it (the next flush into that hour adds to the same row), in UTC whatever
    the database session's zone."""
    import asyncio
    from datetime import datetime, timedelta, timezone

    from cortex_app.gateway.usage import UsageMeter, series, totals
    from cortex_app.models import UsageRecord

    url = f"sqlite:///{tmp_path}/c.db" if kind == "sqlite" else request.getfixturevalue("fresh_postgres_db")
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        command.upgrade(_config(conn), "0015")
    now = datetime.now(timezone.utc)
    hour = now.replace(minute=0, second=0, microsecond=0)
    old = [dict(at=hour + timedelta(minutes=m), key_id=1, key_name="ci", model_name="chat", endpoint="chat",
                stream=False, status=s, prompt_tokens=p, completion_tokens=1, latency_ms=10.0, ttft_ms=None)
           for m, s, p in ((1, 200, 5), (2, 500, 0))]
    old.append({**old[0], "at": hour - timedelta(minutes=30), "prompt_tokens": 7})  # the hour before
    with engine.begin() as conn:
        conn.execute(UsageRecord.__table__.insert(), old)
    with engine.connect() as conn:
        if kind == "postgresql":
            conn.execute(sa.text("SET TIME ZONE 'Asia/Kolkata'"))  # +05:30: hours that are not UTC's
        command.upgrade(_config(conn), "head")
        conn.commit()
    meter = UsageMeter(engine)
    record_at(meter, hour + timedelta(minutes=3), 1, "ci", "chat", "chat", False, 200, 3, 1, 10.0, None)
    asyncio.run(meter.flush())
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT requests, errors, prompt_tokens FROM usage_hour ORDER BY hour")).all()
    assert [tuple(r) for r in rows] == [(1, 0, 7), (3, 1, 8)]
    now = hour + timedelta(minutes=30)  # the clock may pass the hour meanwhile
    assert totals(engine, "24h", "model", now=now)[0].requests == 4
    assert series(engine, "24h", "model", now=now)[1]["chat"][-2:] == [8, 11]
    engine.dispose()
