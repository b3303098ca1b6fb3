"""auth.py on a migrated SQLite database: argon2 hashes, sessions by token hash, sign-out,
first-run only once, wrong passwords slowed down."""

import re
import threading

import sqlalchemy as sa
import pytest
from sqlmodel import Session, select

from cortex_app import auth
from cortex_app.models import AdminSession, AdminUser, SetupCode


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


def test_two_setups_at_once_make_one_admin(db):
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
    token = auth.sign_in(db, "root", "a-long-password")
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
    token = auth.sign_in(db, "root", "a-long-password")
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


def test_wrong_passwords_slow_the_account_down(db):
    auth.create_admin(db, "root", "a-long-password")
    for _ in range(auth.FREE_FAILURES):
        with pytest.raises(auth.AuthError, match="wrong username or password"):
            auth.sign_in(db, "root", "nope-nope-nope")
    with pytest.raises(auth.AuthError, match="try again in") as info:
        auth.sign_in(db, "root", "a-long-password")  # even the right one waits
    assert info.value.retry_after_s >= 1
    with Session(db) as s:
        s.execute(sa.update(AdminUser).values(locked_until=None))
        s.commit()
    assert auth.session_user(db, auth.sign_in(db, "root", "a-long-password")) == "root"
    with Session(db) as s:
        assert s.exec(select(AdminUser.failed_attempts)).one() == 0


def test_unknown_user_gets_the_same_answer(db):
    auth.create_admin(db, "root", "a-long-password")
    with pytest.raises(auth.AuthError, match="^wrong username or password$"):
        auth.sign_in(db, "nobody", "a-long-password")
