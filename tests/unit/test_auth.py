"""auth.py on a migrated SQLite database: argon2 hashes, sessions by token hash, sign-out,
first-run only once, wrong passwords slowed down."""

import asyncio
import re
import threading
import time
from datetime import timedelta

import sqlalchemy as sa
import pytest
from sqlmodel import Session, select

from cortex_app import auth, throttle
from cortex_app.models import AdminSession, AdminUser, ApiToken, SetupCode, SignInThrottle, TokenScope, utcnow


@pytest.fixture(params=["sqlite", "postgresql"])
def any_db(request, migrated_db):
    """The races run on both databases: SQLite serialises writers, PostgreSQL locks rows."""
    if request.param == "sqlite":
        yield migrated_db
        return
    from cortex_app.db import make_engine
    from tests.conftest import migrate

    url = request.getfixturevalue("fresh_postgres_db")
    migrate(url)
    engine = make_engine(url)
    yield engine
    engine.dispose()


def sign_in(*args) -> str:
    """auth.sign_in, as the API route and the page await it."""
    return asyncio.run(auth.sign_in(*args))


@pytest.fixture
def db(migrated_db):
    return migrated_db


def test_the_first_admin_from_the_browser_needs_the_setup_code(db):
    code = auth.new_setup_code(db)
    assert re.fullmatch(r"[A-Z2-9]{4}(-[A-Z2-9]{4}){3}", code)
    for wrong in ("", "AAAA-BBBB-CCCC-DDDD", code[:-1]):
        with pytest.raises(auth.AuthError, match="wrong setup code"):
            auth.create_first_admin(db, "root", "a-long-password", wrong)
    assert not auth.admin_exists(db)  # refused: nothing created
    with Session(db) as s:
        [stored] = s.exec(select(SetupCode.code_hash)).all()
    assert code.replace("-", "") not in stored and len(stored) == 64  # only a hash is kept
    user = auth.create_first_admin(db, "root", "a-long-password", code.replace("-", " ").lower())  # as typed
    assert user.username == "root" and user.password_hash.startswith("$argon2id$")
    with Session(db) as s:
        assert s.exec(select(SetupCode)).all() == []  # gone once used
    with pytest.raises(auth.AuthError, match="exists already"):
        auth.create_first_admin(db, "second", "a-long-password", code)


def test_two_setups_at_once_make_one_admin(any_db):
    db = any_db
    code = auth.new_setup_code(db)
    results = []

    def setup(i):
        try:
            results.append(auth.create_first_admin(db, f"admin{i}", "a-long-password", code).username)
        except auth.AuthError as exc:
            results.append(str(exc))

    threads = [threading.Thread(target=setup, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    made = [r for r in results if r.startswith("admin")]
    assert len(made) == 1 and len(results) == 6, results
    with Session(db) as s:
        assert [u.username for u in s.exec(select(AdminUser)).all()] == made


def test_first_admin_then_sign_in_and_out(db):
    assert not auth.admin_exists(db)
    user = auth.create_admin(db, "root", "a-long-password")
    assert auth.admin_exists(db)
    assert user.password_hash.startswith("$argon2id$") and "a-long-password" not in user.password_hash
    assert "a-long-password" not in repr(user) and "argon2" not in repr(user)
    with pytest.raises(auth.AuthError, match="exists already"):
        auth.create_admin(db, "second", "another-long-password")
    token = sign_in(db, "root", "a-long-password")
    assert auth.session_user(db, token) == "root"
    with Session(db) as s:
        [stored] = s.exec(select(AdminSession.token_hash)).all()
    assert token not in stored and len(stored) == 64  # only the hash is kept
    auth.sign_out(db, token)
    assert auth.session_user(db, token) is None


@pytest.mark.parametrize("token", [None, "", "forged", "x" * 43])
def test_unknown_tokens_are_nobody(db, token):
    auth.create_admin(db, "root", "a-long-password")
    assert auth.session_user(db, token) is None


def test_expired_session_is_nobody(db):
    auth.create_admin(db, "root", "a-long-password")
    token = sign_in(db, "root", "a-long-password")
    with Session(db) as s:
        s.execute(sa.update(AdminSession).values(expires_at=auth.utcnow() - auth.SESSION_TTL))
        s.commit()
    assert auth.session_user(db, token) is None


@pytest.mark.parametrize("username, password, field", [("", "a-long-password", "username"),
                                                        ("has space", "a-long-password", "username"),
                                                        ("root", "short", "password")])
def test_bad_new_credentials(db, username, password, field):
    assert field in auth.check_new_credentials(username, password)
    with pytest.raises(auth.AuthError, match=field):
        auth.create_admin(db, username, password)
    assert not auth.admin_exists(db)


def _unlock(db):
    with Session(db) as s:
        s.execute(sa.update(SignInThrottle).values(locked_until=None))
        s.commit()


def test_wrong_passwords_slow_the_account_down(db):
    auth.create_admin(db, "root", "a-long-password")
    for _ in range(auth.FREE_FAILURES):
        with pytest.raises(auth.AuthError, match="wrong username or password"):
            sign_in(db, "root", "nope-nope-nope", "10.0.0.9")
    with pytest.raises(auth.AuthError, match="try again in") as info:
        sign_in(db, "root", "a-long-password", "10.0.0.9")  # even the right one waits
    assert info.value.retry_after_s >= 1
    _unlock(db)
    assert auth.session_user(db, sign_in(db, "root", "a-long-password", "10.0.0.9")) == "root"
    with Session(db) as s:
        assert s.exec(select(SignInThrottle)).all() == []  # a right password starts afresh


@pytest.mark.parametrize("attempts, free, wait", [(1, 3, None), (2, 3, None), (3, 3, 1), (4, 3, 2), (6, 3, 8),
                                                  (9, 3, 60), (50, 3, 60), (9, 10, None), (10, 10, 1)])
def test_backoff(attempts, free, wait):
    assert throttle.backoff_s(attempts, free) == wait


@pytest.mark.parametrize("seconds, free, attempts", [(0.0, 3, 3), (0.99, 3, 3), (1.0, 3, 4), (2.9, 3, 4), (3.0, 3, 5),
                                                     (0.5, 10, 10), (1.5, 10, 11)])
def test_attempts_within(seconds, free, attempts):
    assert throttle.attempts_within(seconds, free) == attempts


def test_64_guesses_at_once_run_only_the_free_password_checks(any_db):
    db = any_db
    auth.create_admin(db, "root", "a-long-password")
    before = auth.password_checks
    answers = []

    def guess():
        try:
            sign_in(db, "root", "wrong-guess-123", "203.0.113.7")
        except auth.AuthError as exc:
            answers.append(exc.retry_after_s)

    threads = [threading.Thread(target=guess) for _ in range(64)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.monotonic() - t0
    checks = auth.password_checks - before
    assert len(answers) == 64 and sum(1 for a in answers if a == 0) == checks  # 401 after each check
    # The rest were refused before any hash work: 3 checks while the flood lasts under 1 s
    # (then one per back-off that ran out). Before the reservation: 17 of 64.
    assert auth.FREE_FAILURES <= checks <= throttle.attempts_within(took, throttle.ACCOUNT_FREE), (checks, took)
    # Someone else's guesses never lock the admin out from another address.
    assert auth.session_user(db, sign_in(db, "root", "a-long-password", "192.0.2.10")) == "root"


def test_sign_in_work_never_runs_on_the_default_thread_pool(db, monkeypatch):
    """The reconciler and the pages use asyncio's default pool: sign-ins have pools of their own."""
    auth.create_admin(db, "root", "a-long-password")
    seen = []
    for name in ("reserve", "clear"):
        real = getattr(throttle, name)
        monkeypatch.setattr(throttle, name, lambda *a, _real=real: seen.append(threading.current_thread().name)
                            or _real(*a))
    real_verify = auth._verify
    monkeypatch.setattr(auth, "_verify", lambda *a: seen.append(threading.current_thread().name) or real_verify(*a))
    sign_in(db, "root", "a-long-password", "10.2.2.2")
    assert len(seen) == 3 and all(n.startswith(("sign-in", "password-hash")) for n in seen), seen
    assert seen[1].startswith("password-hash")


def test_a_right_password_racing_wrong_ones_never_fails_on_locks(any_db):
    """clear() and reserve() take the rows in one order: no deadlock, no vanished row (PostgreSQL)."""
    db = any_db
    auth.create_admin(db, "root", "a-long-password")
    errors = []

    def attempt(password):
        try:
            sign_in(db, "root", password, "10.3.3.3")
        except auth.AuthError:
            pass
        except Exception as exc:  # noqa: BLE001 - what this test is about
            errors.append(repr(exc))

    for _ in range(3):
        threads = [threading.Thread(target=attempt, args=(p,)) for p in ["a-long-password", "wrong-one-1"] * 4]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        _unlock(db)
    assert errors == []


def test_the_wait_is_the_lock_and_idle_keys_start_afresh(db):
    for _ in range(auth.FREE_FAILURES):
        with pytest.raises(auth.AuthError, match="wrong username or password"):
            sign_in(db, "root", "nope-nope-nope", "10.4.4.4")
    with pytest.raises(auth.AuthError) as info:
        sign_in(db, "root", "nope-nope-nope", "10.4.4.4")
    assert info.value.retry_after_s == 1  # the first lock is 1 s, and so is the answer
    with Session(db) as s:  # a day later
        s.execute(sa.update(SignInThrottle).values(locked_until=None,
                                                   last_attempt_at=auth.utcnow() - throttle.FORGET_AFTER * 2))
        s.commit()
    with pytest.raises(auth.AuthError, match="wrong username or password"):
        sign_in(db, "root", "nope-nope-nope", "10.4.4.4")
    with Session(db) as s:
        assert sorted(s.exec(select(SignInThrottle.attempts)).all()) == [1, 1]  # counted afresh
        s.execute(sa.update(SignInThrottle).values(last_attempt_at=auth.utcnow() - throttle.FORGET_AFTER * 2))
        s.commit()
    assert throttle.forget_idle(db) == 2


def test_one_address_trying_many_names_is_slowed_down_too(db):
    for i in range(throttle.ADDRESS_FREE):
        with pytest.raises(auth.AuthError, match="wrong username or password"):
            sign_in(db, f"user{i}", "whatever-password", "198.51.100.4")
    with pytest.raises(auth.AuthError, match="try again in"):
        sign_in(db, "user-next", "whatever-password", "198.51.100.4")
    with pytest.raises(auth.AuthError, match="wrong username or password"):
        sign_in(db, "user-next", "whatever-password", "198.51.100.5")  # another address: its own count


def test_unknown_user_gets_the_same_answer(db):
    auth.create_admin(db, "root", "a-long-password")
    with pytest.raises(auth.AuthError, match="^wrong username or password$"):
        sign_in(db, "nobody", "a-long-password")
    # ... also once throttled: the wait does not tell which names exist.
    for _ in range(auth.FREE_FAILURES):
        with pytest.raises(auth.AuthError, match="^wrong username or password$"):
            sign_in(db, "nobody", "a-long-password", "10.1.1.1")
    with pytest.raises(auth.AuthError, match="try again in"):
        sign_in(db, "nobody", "a-long-password", "10.1.1.1")


@pytest.mark.parametrize("have, needed, allowed", [
    ("read", "read", True), ("read", "operate", False), ("read", "admin", False),
    ("operate", "read", True), ("operate", "operate", True), ("operate", "admin", False),
    ("admin", "read", True), ("admin", "operate", True), ("admin", "admin", True),
])
def test_each_scope_includes_the_ones_before_it(have, needed, allowed):
    assert TokenScope(have).allows(TokenScope(needed)) is allowed


def test_api_tokens_have_a_scope_an_expiry_and_stop_at_revoke(db):
    forever = auth.create_api_token(db, "ci", "operate")
    week = auth.create_api_token(db, "week", "admin", 7)
    assert auth.api_token_caller(db, forever) == auth.TokenCaller("ci", TokenScope.OPERATE)
    assert auth.api_token_caller(db, week).scope is TokenScope.ADMIN
    with Session(db) as s:
        rows = {t.name: t for t in s.exec(select(ApiToken)).all()}
    assert rows["ci"].expires_at is None and rows["ci"].last_used_at is not None
    assert timedelta(days=6, hours=23) < rows["week"].expires_at - utcnow() <= timedelta(days=7)
    with Session(db) as s:  # a week later
        s.execute(sa.update(ApiToken).where(ApiToken.name == "week").values(expires_at=utcnow() - timedelta(seconds=1)))
        s.commit()
    assert auth.api_token_caller(db, week) is None
    auth.revoke_api_token(db, rows["ci"].id)
    assert auth.api_token_caller(db, forever) is None
    with Session(db) as s:
        assert s.get(ApiToken, rows["ci"].id).revoked_at is not None  # kept, marked


@pytest.mark.parametrize("scope, days, error", [("root", 0, "unknown scope 'root'"), ("read", 3, "expiry: use one of")])
def test_a_bad_scope_or_expiry_makes_no_token(db, scope, days, error):
    with pytest.raises(auth.AuthError, match=error):
        auth.create_api_token(db, "x", scope, days)
    with Session(db) as s:
        assert s.exec(select(ApiToken)).all() == []


def test_last_use_is_written_at_most_once_a_minute(db):
    token = auth.create_api_token(db, "scraper")
    auth.api_token_caller(db, token)
    with Session(db) as s:
        first = s.exec(select(ApiToken.last_used_at)).one()
    auth.api_token_caller(db, token)
    with Session(db) as s:
        assert s.exec(select(ApiToken.last_used_at)).one() == first
        s.execute(sa.update(ApiToken).values(last_used_at=first - auth.LAST_USE_GRANULARITY))
        s.commit()
    auth.api_token_caller(db, token)
    with Session(db) as s:
        assert s.exec(select(ApiToken.last_used_at)).one() > first


def test_a_pages_sign_in_is_handed_over_once_by_its_code(db):
    """The sign-in page gets a one-time code, not the session token (the page's scripts never
    see it); /api/session/adopt turns the code into the session's token, once, within a minute."""
    auth.create_admin(db, "alice", "correct-horse-1")
    code = asyncio.run(auth.sign_in(db, "alice", "correct-horse-1", "10.0.0.1", handoff=True))
    assert auth.session_user(db, code) is None  # the code is no session
    token = auth.adopt(db, code)
    assert token and token != code and auth.session_user(db, token) == "alice"
    assert auth.adopt(db, code) is None  # once only
    with Session(db) as s:
        [row] = s.exec(select(AdminSession)).all()
        assert row.handoff_hash is None and row.expires_at - utcnow() > auth.SESSION_TTL - timedelta(minutes=1)
    late = asyncio.run(auth.sign_in(db, "alice", "correct-horse-1", "10.0.0.1", handoff=True))
    with Session(db) as s:
        s.execute(sa.update(AdminSession).where(AdminSession.handoff_hash.is_not(None))
                  .values(expires_at=utcnow() - timedelta(seconds=1)))
        s.commit()
    assert auth.adopt(db, late) is None and auth.adopt(db, "") is None


def test_two_adopts_of_one_code_make_one_session(any_db):
    auth.create_admin(any_db, "bob", "correct-horse-2")
    code = asyncio.run(auth.sign_in(any_db, "bob", "correct-horse-2", "10.0.0.2", handoff=True))
    results = []
    threads = [threading.Thread(target=lambda: results.append(auth.adopt(any_db, code))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 8 and len([r for r in results if r]) == 1
