"""gateway/usage.py: the meter's batched writes and what the Usage page and the CSV export
read back (totals, buckets over time, the window), on a migrated SQLite database; the
histograms /metrics serves."""

import asyncio
import csv
import io
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from cortex_app.gateway.usage import LATENCY_BUCKETS, Histogram, UsageMeter, rows_csv, series, totals

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


def test_window_and_buckets(migrated_db):
    meter = UsageMeter(migrated_db)
    for hours_ago, tokens in ((0.1, 10), (1.5, 20), (1.6, 5), (30, 100)):
        meter.record(1, "ci", "chat", "chat", False, 200, tokens, 0, 1.0, None)
        meter._pending[-1] = (NOW - timedelta(hours=hours_ago), *meter._pending[-1][1:])
    asyncio.run(meter.flush())
    labels, values = series(migrated_db, "24h", "model", now=NOW)
    assert len(labels) == len(values["chat"]) == 25 and sum(values["chat"]) == 35  # 30 h ago is out
    # hour buckets: 12:24 in the 12:00 one (the last), 11:00 and 10:54 in the two before it
    assert values["chat"][-3:] == [5, 20, 10]
    assert sum(sum(v) for v in series(migrated_db, "7d", "model", now=NOW)[1].values()) == 135
    assert totals(migrated_db, "24h", "model", now=NOW)[0].prompt_tokens == 35


def test_histogram_is_cumulative_with_inf():
    h = Histogram()
    for s in (0.001, 0.02, 0.02, 500.0):
        h.observe(s)
    buckets = dict(h.buckets())
    assert buckets[str(LATENCY_BUCKETS[0])] == 1 and buckets["0.025"] == 3 and buckets["+Inf"] == 4
    assert h.n == 4 and abs(h.total - 500.041) < 1e-9
