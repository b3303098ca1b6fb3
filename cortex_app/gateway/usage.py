"""Usage metering: what each gateway request cost, kept off the request path.

A request appends one tuple to a list (no lock, no I/O: the event loop's thread is the only
writer); the gateway flushes whatever gathered, in one INSERT, every second. The same
figures feed this process's counters and histograms for /metrics. Reading it back (the Usage
page, the CSV export) is `totals()` and `series()`, from the hourly sums the flush keeps
(usage_hour), and `rows_csv()`, from the records; `prune()` keeps both to the retention the
admin set."""

from __future__ import annotations

import asyncio
import csv
import io
from bisect import bisect_left
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Callable, Iterator, Optional

import sqlalchemy as sa
from sqlmodel import Session, func, select

from cortex_app.models import UsageHour, UsageRecord, utcnow

FLUSH_INTERVAL_S = 1.0
PRUNE_BATCH = 10_000
MAX_PENDING = 100_000  # a database that cannot keep up loses the oldest records, never the requests
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
_COLUMNS = ("at", "key_id", "key_name", "model_name", "endpoint", "stream", "status", "prompt_tokens",
            "completion_tokens", "latency_ms", "ttft_ms")


class Histogram:
    __slots__ = ("counts", "total", "n")

    def __init__(self) -> None:
        self.counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self.total = 0.0
        self.n = 0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.total += seconds
        self.n += 1

    def buckets(self) -> list[tuple[str, int]]:
        """Cumulative, as Prometheus wants them."""
        out, acc = [], 0
        for bound, c in zip((*map(str, LATENCY_BUCKETS), "+Inf"), self.counts):
            acc += c
            out.append((bound, acc))
        return out


class GatewayMetrics:
    """This process's gateway figures since it started (served on /metrics)."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, int], int] = defaultdict(int)
        self.tokens: dict[tuple[str, str], int] = defaultdict(int)
        self.latency: dict[str, Histogram] = defaultdict(Histogram)
        self.ttft: dict[str, Histogram] = defaultdict(Histogram)
        self.refused: dict[int, int] = defaultdict(int)  # status -> requests refused (401, 403, 429)

    def refuse(self, status: int) -> None:
        self.refused[status] += 1

    def observe(self, model: str, status: int, prompt: int, completion: int, latency_s: float,
                ttft_s: Optional[float]) -> None:
        self.requests[(model, status)] += 1
        if prompt:
            self.tokens[(model, "prompt")] += prompt
        if completion:
            self.tokens[(model, "completion")] += completion
        self.latency[model].observe(latency_s)
        if ttft_s is not None:
            self.ttft[model].observe(ttft_s)


class UsageMeter:
    def __init__(self, db: sa.Engine, enabled: bool = True) -> None:
        self.db, self.enabled = db, enabled
        self._pending: list[tuple] = []
        self.dropped = 0
        self.written = 0

    def record(self, key_id: Optional[int], key_name: str, model: str, endpoint: str, stream: bool, status: int,
               prompt: int, completion: int, latency_ms: float, ttft_ms: Optional[float]) -> None:
        if not self.enabled:
            return
        if len(self._pending) >= MAX_PENDING:
            del self._pending[: MAX_PENDING // 10]
            self.dropped += MAX_PENDING // 10
        self._pending.append((utcnow(), key_id, key_name, model, endpoint, stream, status, prompt, completion,
                              round(latency_ms, 3), None if ttft_ms is None else round(ttft_ms, 3)))

    @property
    def pending(self) -> int:
        return len(self._pending)

    def _write(self, batch: list[tuple]) -> None:
        # Core's executemany, not the ORM's bulk path: a third less CPU per row, and the
        # thread it runs in shares the GIL with the requests. The hourly sums change in the
        # same transaction, so they never disagree with the records.
        with self.db.begin() as conn:
            conn.execute(UsageRecord.__table__.insert(), [dict(zip(_COLUMNS, row)) for row in batch])
            conn.execute(_add_to_hours(conn.dialect.name), hourly_sums(batch))

    async def flush(self) -> int:
        """Write what gathered; on a failure the records are kept for the next flush (bounded)
        and the error is raised for the caller to report."""
        batch, self._pending = self._pending, []
        if not batch:
            return 0
        try:
            await asyncio.to_thread(self._write, batch)
        except Exception:
            self._pending[:0] = batch
            raise
        self.written += len(batch)
        return len(batch)


_SUMS = ("requests", "errors", "prompt_tokens", "completion_tokens", "latency_ms_sum")


def hourly_sums(batch: list[tuple]) -> list[dict]:
    """A batch of records (the meter's tuples) summed per hour, model and key name."""
    sums: dict[tuple, list] = {}
    for at, _key_id, key_name, model, _endpoint, _stream, status, prompt, completion, latency_ms, _ttft in batch:
        s = sums.setdefault((at.replace(minute=0, second=0, microsecond=0), model, key_name), [0, 0, 0, 0, 0.0])
        s[0] += 1
        s[1] += status >= 400
        s[2] += prompt
        s[3] += completion
        s[4] += latency_ms
    # In key order: two consoles flushing into the same hours lock the rows in the same order.
    return [{"hour": h, "model_name": m, "key_name": k, **dict(zip(_SUMS, v))} for (h, m, k), v in sorted(sums.items())]


def _add_to_hours(dialect: str):
    """INSERT … ON CONFLICT DO UPDATE adding to the hour's row (both backends have it)."""
    from sqlalchemy.dialects import postgresql, sqlite

    table = UsageHour.__table__
    stmt = (postgresql if dialect == "postgresql" else sqlite).insert(table)
    return stmt.on_conflict_do_update(index_elements=["hour", "model_name", "key_name"],
                                      set_={c: table.c[c] + stmt.excluded[c] for c in _SUMS})


# --- reading it back -----------------------------------------------------------------------

WINDOWS = {"24h": (timedelta(hours=24), timedelta(hours=1)), "7d": (timedelta(days=7), timedelta(hours=6)),
           "30d": (timedelta(days=30), timedelta(days=1))}


@dataclass(frozen=True)
class Total:
    name: str
    requests: int
    errors: int
    prompt_tokens: int
    completion_tokens: int
    avg_latency_ms: float


def _since(window: str, now: datetime) -> tuple[datetime, timedelta]:
    span, step = WINDOWS[window]
    return now - span, step


def _whole_hours(window: str, now: datetime) -> tuple[datetime, timedelta]:
    """Where the window's sums begin (its first hour, whole) and its step."""
    since, step = _since(window, now)
    return since.replace(minute=0, second=0, microsecond=0), step


def totals(db: sa.Engine, window: str, by: str, now: Optional[datetime] = None) -> list[Total]:
    """Per model (`by="model"`) or per key (`by="key"`) over the window's hours, the busiest
    first."""
    start, _ = _whole_hours(window, now or utcnow())
    col = UsageHour.model_name if by == "model" else UsageHour.key_name
    with Session(db) as s:
        rows = s.exec(select(col, func.sum(UsageHour.requests), func.sum(UsageHour.errors),
                             func.sum(UsageHour.prompt_tokens), func.sum(UsageHour.completion_tokens),
                             func.sum(UsageHour.latency_ms_sum))
                      .where(UsageHour.hour >= start).group_by(col)).all()
    out = [Total(n, int(r), int(e or 0), int(p or 0), int(c or 0), round((lat or 0.0) / r, 1) if r else 0.0)
           for n, r, e, p, c, lat in rows]
    return sorted(out, key=lambda t: (-t.requests, t.name))


def series(db: sa.Engine, window: str, by: str, now: Optional[datetime] = None) -> tuple[list[str], dict[str, list]]:
    """Tokens (prompt + completion) per time step over the window for each model or key: the
    step labels, and each name's values, from the hourly sums (a step is whole hours)."""
    now = now or utcnow()
    start, step = _whole_hours(window, now)
    col = UsageHour.model_name if by == "model" else UsageHour.key_name
    with Session(db) as s:
        rows = s.exec(select(UsageHour.hour, col, UsageHour.prompt_tokens + UsageHour.completion_tokens)
                      .where(UsageHour.hour >= start)).all()
    n = int((now - _since(window, now)[0]) / step) + 1
    labels = [(start + i * step).astimezone(timezone.utc).strftime("%m-%d %H:%M") for i in range(n)]
    values: dict[str, list] = defaultdict(lambda: [0] * n)
    for hour, name, tokens in rows:
        values[name][min(n - 1, int((hour - start) / step))] += tokens or 0
    return labels, dict(values)


def prune(db: sa.Engine, older_than: datetime, stop: Callable[[], bool] = lambda: False) -> int:
    """Delete the records from before `older_than` (CORTEX_USAGE_RETENTION_DAYS), PRUNE_BATCH
    per transaction: the meter's flush waits for one batch at most, and a console shutting down
    (`stop()`) for no more than that; the rest goes next time. Then the hourly sums of hours
    wholly before the cutoff (the hour the cutoff falls in keeps its sums until it is wholly
    past). The number of records deleted."""
    deleted, batch = 0, PRUNE_BATCH
    while True:
        oldest = (select(UsageRecord.id).where(UsageRecord.at < older_than).order_by(UsageRecord.id)
                  .limit(batch).scalar_subquery())
        with db.begin() as conn:
            n = conn.execute(sa.delete(UsageRecord).where(UsageRecord.id.in_(oldest))).rowcount
        deleted += n
        if n < batch:
            break
        if stop():
            return deleted
    with db.begin() as conn:  # an hour that began an hour before the cutoff is wholly before it
        conn.execute(sa.delete(UsageHour).where(UsageHour.hour <= older_than - timedelta(hours=1)))
    return deleted


# A cell a spreadsheet would read as a formula begins with one of these (OWASP's list): the
# export of what key holders and admins typed must never run as one on the reader's machine.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_text(value: str) -> str:
    """User text as a CSV cell a spreadsheet shows as text: a leading `'` when it would
    otherwise start a formula (the cell then reads exactly as typed)."""
    return "'" + value if value.startswith(_FORMULA_STARTS) else value


def rows_csv(db: sa.Engine, window: str, now: Optional[datetime] = None, batch: int = 5000) -> Iterator[str]:
    """Every record in the window (from its first whole hour, as the page counts) as CSV,
    oldest first, a batch at a time (an export of a busy month never sits whole in memory);
    its text cells are safe to open in a spreadsheet (csv_text)."""
    since, _ = _whole_hours(window, now or utcnow())
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(_COLUMNS)
    yield buf.getvalue()
    last_id = 0
    while True:
        with Session(db) as s:
            rows = s.exec(select(UsageRecord).where(UsageRecord.at >= since, UsageRecord.id > last_id)
                          .order_by(UsageRecord.id).limit(batch)).all()
        if not rows:
            return
        buf.seek(0)
        buf.truncate()
        for r in rows:
            w.writerow([r.at.isoformat(), r.key_id if r.key_id is not None else "", csv_text(r.key_name),
                        csv_text(r.model_name), csv_text(r.endpoint), int(r.stream), r.status, r.prompt_tokens, r.completion_tokens, r.latency_ms,
                        "" if r.ttft_ms is None else r.ttft_ms])
        last_id = rows[-1].id
        yield buf.getvalue()
