"""Secrets at rest (secretbox.py): the database holds only sealed values, the key comes from
CORTEX_SECRET_KEY or a 0600 key file made once, and another key reads nothing (and says so)."""

import asyncio
import os
import stat
import threading

import httpx
import pytest
import sqlalchemy as sa
from sqlmodel import Session

from cortex_app import secretbox, webhooks
from cortex_app.models import Engine, Model, WebhookEndpoint
from cortex_app.settings import SettingsError, load_settings


def test_the_database_holds_only_sealed_values(migrated_db):
    ep = webhooks.create_endpoint(migrated_db, url="http://127.0.0.1:9/x", event_types=["model.failed"])
    with Session(migrated_db) as s:
        s.add(Model(name="v", served_name="v", engine=Engine.VLLM, image="i", source="org/m", hf_token="hf_abcdef123456"))
        s.commit()
    with migrated_db.connect() as conn:
        stored_secret = conn.execute(sa.text("SELECT secret FROM webhook_endpoint")).scalar_one()
        stored_token = conn.execute(sa.text("SELECT hf_token FROM model")).scalar_one()
    for stored, clear in ((stored_secret, ep.secret), (stored_token, "hf_abcdef123456")):
        assert stored.startswith("fernet:") and clear not in stored
    with Session(migrated_db) as s:  # the ORM reads them back in clear
        assert s.get(WebhookEndpoint, ep.id).secret == ep.secret
        assert s.exec(sa.select(Model)).scalar_one().hf_token == "hf_abcdef123456"
    rotated = webhooks.rotate_secret(migrated_db, ep.id)  # a Core UPDATE seals too
    with migrated_db.connect() as conn:
        assert rotated not in conn.execute(sa.text("SELECT secret FROM webhook_endpoint")).scalar_one()
    assert webhooks.get_endpoint(migrated_db, ep.id).secret == rotated


def test_another_key_reads_nothing_and_a_delivery_says_what_to_do(migrated_db, tmp_path, caplog):
    ep = webhooks.create_endpoint(migrated_db, url="http://127.0.0.1:9/x", event_types=["model.failed"])
    secretbox.use(load_settings({"CORTEX_SECRET_KEY": "another-key-another-key-another-key-1"}))
    lost = webhooks.get_endpoint(migrated_db, ep.id)
    assert lost.secret is None
    assert "cannot be read with this console's secret key" in caplog.text and ep.secret not in caplog.text

    async def deliver():
        async with httpx.AsyncClient() as client:
            return await webhooks.send(client, lost.url, lost.secret, "msg_1", {"type": "ping"})

    out = asyncio.run(deliver())
    assert not out.ok and "rotate the secret on the Settings page" in out.error


def test_the_key_file_is_made_once_0600_and_kept(tmp_path):
    settings = load_settings({"CORTEX_DATA_DIR": str(tmp_path)})
    where = secretbox.use(settings)
    path = tmp_path / secretbox.KEY_FILE
    assert where == str(path) and stat.S_IMODE(path.stat().st_mode) == 0o600
    sealed = secretbox.seal("whsec_x")
    key = path.read_text()
    secretbox.use(settings)  # the next start reads the same key
    assert path.read_text() == key and secretbox.unseal(sealed) == "whsec_x"
    os.chmod(path, 0o644)
    secretbox.use(settings)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # readable by others no more


def test_starts_at_once_share_one_key(tmp_path):
    """Eight starts at once on a fresh data dir, 30 times: each reads the whole key, all the same
    one (a key written in place was read half-written by a start racing it)."""
    for round_ in range(30):
        settings = load_settings({"CORTEX_DATA_DIR": str(tmp_path / str(round_))})
        settings.data_dir.mkdir()
        keys, errors = [], []

        def start():
            try:
                keys.append(secretbox.load_key(settings)[0])
            except Exception as exc:  # noqa: BLE001 - counted below
                errors.append(exc)

        threads = [threading.Thread(target=start) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == [] and len(keys) == 8 and len(set(keys)) == 1, (round_, errors)
        assert [p.name for p in settings.data_dir.iterdir()] == [secretbox.KEY_FILE]  # no leftovers


def test_an_unusable_key_is_refused_with_the_way_out(tmp_path):
    with pytest.raises(SettingsError, match="CORTEX_SECRET_KEY is too short.*openssl rand"):
        load_settings({"CORTEX_SECRET_KEY": "short"})
    (tmp_path / secretbox.KEY_FILE).write_text("x\n")
    with pytest.raises(secretbox.SecretKeyError, match="holds no usable key.*restore it"):
        secretbox.use(load_settings({"CORTEX_DATA_DIR": str(tmp_path)}))
    # The setting wins over the file.
    assert secretbox.use(load_settings({"CORTEX_DATA_DIR": str(tmp_path),
                                        "CORTEX_SECRET_KEY": "k" * 32})) == "CORTEX_SECRET_KEY"


def test_the_console_process_is_made_not_dumpable():
    """What services.build does first: after it, the process's memory (and its memory files with
    hosts' and ingresses' keys) is root's only, and no core dump holds a secret."""
    import subprocess
    import sys

    code = ("import ctypes, ctypes.util; from cortex_app import secretbox; "
            "libc = ctypes.CDLL(ctypes.util.find_library('c'), use_errno=True); "
            "before = libc.prctl(secretbox.PR_GET_DUMPABLE, 0, 0, 0, 0); "
            "ok = secretbox.protect_process(); "
            "print(before, ok, libc.prctl(secretbox.PR_GET_DUMPABLE, 0, 0, 0, 0))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["1", "True", "0"], out
