"""Every event handler that changes something, called by a raw socket.io client (no browser,
no page loaded first), as an attacker on the network would: without a session each one is
refused and nothing changes; a foreign Origin gets no websocket at all; the first-admin handler
refuses a missing or wrong setup code. A signed-in control proves the same calls do work."""

from __future__ import annotations

import json
import re
import time
import uuid

import httpx
import pytest
import simple_websocket
import sqlalchemy as sa
from simple_websocket.errors import ConnectionError as Refused
from sqlmodel import Session

from cortex_app import auth, crud, webhooks
from cortex_app.gateway import keys as keymod
from cortex_app.models import Host
from tests.conftest import LLAMA_IMAGE

NS = "/_event"
AUTH = "reflex___state____state.cortex_app___states___auth____auth_state"
ADMIN_STATE = "reflex___state____state.cortex_app___states___auth____admin_state"
MODELS = f"{ADMIN_STATE}.cortex_app___states___models____models_state"
FORM = f"{ADMIN_STATE}.cortex_app___states___model_form____model_form_state"
SETTINGS = f"{ADMIN_STATE}.cortex_app___states___settings____settings_state"
IMAGES = f"{ADMIN_STATE}.cortex_app___states___images____images_state"
KEYS = f"{ADMIN_STATE}.cortex_app___states___keys____keys_state"
USAGE = f"{ADMIN_STATE}.cortex_app___states___usage____usage_state"
HOSTS = f"{ADMIN_STATE}.cortex_app___states___hosts____hosts_state"
PASSWORD = "socket-test-pass-1"


class RawSocket:
    """Engine.IO 4 / Socket.IO 5 over one websocket, spelled out: the frames Reflex's page
    sends, without Reflex's page."""

    def __init__(self, url: str, origin: str, cookie: str = ""):
        headers = {"Origin": origin} | ({"Cookie": cookie} if cookie else {})
        self.ws = simple_websocket.Client(
            f"{url.replace('http://', 'ws://')}/_event/?EIO=4&transport=websocket&token={uuid.uuid4()}",
            headers=headers)
        # Generous: once in CI the open packet took over 10 s to come (the console busy with the
        # first admin's password hashes and sign-in on a loaded machine).
        opened = self.ws.receive(timeout=30)
        assert opened and opened.startswith("0{"), opened  # engine.io open
        self.ws.send(f"40{NS},")
        assert self._next(30).startswith(f"40{NS},")  # namespace joined

    def _next(self, timeout: float) -> str:
        while True:
            frame = self.ws.receive(timeout=timeout)
            if frame is None:
                raise TimeoutError("no frame")
            if frame == "2":  # engine.io ping
                self.ws.send("3")
                continue
            return frame

    def call(self, handler: str, path: str, wait: float = 5.0, until=lambda updates: False, **payload) -> list[dict]:
        """Send one event as the page would on `path`; the updates that came back within `wait` s
        (or once `until(updates)`)."""
        event = {"name": handler, "payload": payload, "router_data": {"pathname": path, "asPath": path, "query": {}}}
        self.ws.send(f"42{NS}," + json.dumps(["event", event]))
        updates, deadline = [], time.monotonic() + wait
        while (left := deadline - time.monotonic()) > 0:
            try:
                frame = self._next(left)
            except TimeoutError:
                break
            if frame.startswith(f"42{NS},"):
                name, body = json.loads(frame[len(f"42{NS},"):])
                updates.append(json.loads(body) if isinstance(body, str) else body)
                if until(updates):
                    break
        return updates

    def close(self):
        self.ws.close()


def _redirects(updates: list[dict]) -> list[str]:
    return [e["payload"].get("path") for u in updates for e in u.get("events", []) if e.get("name") == "_redirect"]


def _to_login(updates: list[dict]) -> bool:
    return "/login" in _redirects(updates)


def _auth_error(updates: list[dict]) -> str:
    return " ".join(str(v) for u in updates for k, v in u.get("delta", {}).get(AUTH, {}).items()
                    if k.startswith("error"))


@pytest.fixture(scope="module")
def console(start_console, tmp_path_factory, tiny_gguf, docker_host):
    models = tmp_path_factory.mktemp("models")
    (models / "tiny.gguf").write_bytes(tiny_gguf.read_bytes())
    # No CORTEX_ADMIN_*: the first admin is still to be made, with the printed setup code.
    c = start_console(DOCKER_HOST=docker_host, CORTEX_MODELS_DIR=str(models), CORTEX_LLAMACPP_IMAGE=LLAMA_IMAGE)
    yield c
    c.stop()


@pytest.fixture(scope="module")
def world(console):
    """What a refused call could change: a model, a webhook endpoint with a delivery, a token,
    an inference key, a host (host 2: made as if added, its engine never asked)."""
    db = console.db()
    model = crud.create_model(db, console.settings, {"name": "tiny", "engine": "llamacpp", "source": "tiny.gguf"})
    ep = webhooks.create_endpoint(db, url="http://127.0.0.1:9/hook", event_types=["model.failed"])
    auth.create_api_token(db, "kept", "read")
    with db.connect() as conn:
        token_id = conn.execute(sa.text("SELECT id FROM api_token")).scalar_one()
    key, _ = keymod.create_key(db, "kept")
    with Session(db) as session:
        session.add(Host(name="kept-host", endpoint="tcp://127.0.0.1:9"))
        session.commit()
    yield db, model.id, ep.id, token_id, key.id
    db.dispose()


def _snapshot(db, console, docker_client) -> tuple:
    with db.connect() as conn:
        rows = tuple(conn.execute(sa.text(q)).all() for q in (
            "SELECT id, name, state, container_id, updated_at FROM model ORDER BY id",
            "SELECT count(*) FROM model_event",
            "SELECT id, url, secret, enabled FROM webhook_endpoint ORDER BY id",
            "SELECT id, status, attempts FROM webhook_delivery ORDER BY id",
            "SELECT id, name, scope, revoked_at FROM api_token ORDER BY id",
            "SELECT id, name, models, revoked_at FROM inference_key ORDER BY id",
            "SELECT id, username FROM admin_user",
            "SELECT count(*) FROM setup_code",
            "SELECT id, name, endpoint FROM host ORDER BY id"))  # not checked_at: the hosts job writes it
    return rows, sorted(c.id for c in console.containers(docker_client))


def _mutating_calls(model_id: int, endpoint_id: int, token_id: int, key_id: int) -> list[tuple]:
    """(handler, page, payload, inputs set first) for every handler that changes something."""
    form = {"name": "forged", "engine": "llamacpp", "source": "tiny.gguf"}
    return [
        *[(f"{MODELS}.{verb}", "/models", {"model_id": model_id}, [])
          for verb in ("start", "start_anyway", "stop", "apply", "delete")],
        (f"{FORM}.save", "/models/new", {}, [(f"{FORM}.set_value", {"field": k, "value": v}) for k, v in form.items()]),
        (f"{SETTINGS}.add_endpoint", "/settings", {}, [(f"{SETTINGS}.set_new_url", {"v": "http://127.0.0.1:9/forged"})]),
        (f"{SETTINGS}.rotate", "/settings", {"endpoint_id": endpoint_id}, []),
        (f"{SETTINGS}.toggle_enabled", "/settings", {"endpoint_id": endpoint_id}, []),
        (f"{SETTINGS}.remove", "/settings", {"endpoint_id": endpoint_id}, []),
        (f"{SETTINGS}.ping", "/settings", {"endpoint_id": endpoint_id}, []),
        (f"{SETTINGS}.redeliver", "/settings", {"delivery_id": 1}, []),
        (f"{SETTINGS}.create_token", "/settings", {}, [(f"{SETTINGS}.set_token_scope", {"v": "admin"})]),
        (f"{SETTINGS}.revoke_token", "/settings", {"token_id": token_id}, []),
        (f"{KEYS}.create_key", "/keys", {}, [(f"{KEYS}.set_name", {"v": "forged"})]),
        (f"{KEYS}.revoke_key", "/keys", {"key_id": key_id}, []),
        (f"{IMAGES}.pull", "/system", {"image": "127.0.0.1:9/forged:1"}, []),
        (f"{IMAGES}.cancel_pull", "/system", {"image": "127.0.0.1:9/forged:1"}, []),
        (f"{HOSTS}.add_host", "/hosts", {"form": {"name": "forged", "endpoint": "tcp://127.0.0.1:9"}}, []),
        (f"{HOSTS}.check_host", "/hosts", {"host_id": 2}, []),
        (f"{HOSTS}.remove_host", "/hosts", {"host_id": 2}, []),
    ]


def test_without_a_session_every_mutating_handler_is_refused(console, world, docker_client):
    db, model_id, endpoint_id, token_id, key_id = world
    calls = _mutating_calls(model_id, endpoint_id, token_id, key_id)
    before = _snapshot(db, console, docker_client)
    for forged_cookie in ("", "cortex_session=forged-session-token"):
        sock = RawSocket(console.url, console.url, forged_cookie)
        try:
            for handler, page, payload, inputs in calls:
                for setter, args in inputs:
                    sock.call(setter, page, until=bool, **args)
                updates = sock.call(handler, page, until=_to_login, **payload)
                assert "/login" in _redirects(updates), (handler, updates)  # it ran, and refused
                assert _snapshot(db, console, docker_client) == before, handler
        finally:
            sock.close()


def test_without_a_session_the_pages_read_nothing(console, world):
    """Every page's load and tick sends a tab without a session to sign-in, with none of the
    data (model, endpoint, token and key names) in what it gets back."""
    _, model_id, *_ = world
    reads = [(f"{MODELS}.load", "/models"), (f"{MODELS}.tick", "/models"),
             (f"{ADMIN_STATE}.cortex_app___states___model_detail____model_detail_state.load", f"/models/{model_id}"),
             (f"{ADMIN_STATE}.cortex_app___states___model_detail____model_detail_state.tick", f"/models/{model_id}"),
             (f"{FORM}.open_edit", f"/models/{model_id}/edit"), (f"{FORM}.open_new", "/models/new"),
             (f"{SETTINGS}.load", "/settings"), (f"{SETTINGS}.tick", "/settings"),
             (f"{ADMIN_STATE}.cortex_app___states___gpus____gpu_state.load", "/gpus"),
             (f"{ADMIN_STATE}.cortex_app___states___system____system_state.refresh", "/system"),
             (f"{IMAGES}.load_pulls", "/system"),
             (f"{ADMIN_STATE}.cortex_app___states___overview____overview_state.load", "/"),
             (f"{ADMIN_STATE}.cortex_app___states___overview____overview_state.tick", "/"),
             (f"{KEYS}.load", "/keys"), (f"{USAGE}.load", "/usage"), (f"{HOSTS}.load", "/hosts"),
             (f"{HOSTS}.tick", "/hosts")]
    sock = RawSocket(console.url, console.url)
    try:
        for handler, page in reads:
            updates = sock.call(handler, page, until=_to_login)
            assert _to_login(updates), handler
            seen = json.dumps([u.get("delta", {}) for u in updates])
            assert not any(word in seen for word in ('"tiny"', "127.0.0.1:9/hook", '"kept"', "tiny.gguf", "kept-host")), \
                (handler, seen)
    finally:
        sock.close()


# Handlers that do work on the server without changing anything kept (a read of the models
# dir, an estimate, a look at the engine's images), called without a session.
WORKING = [(f"{FORM}.set_value", "/models/new", {"field": "source", "value": "tiny.gguf"}),
           (f"{FORM}.set_value", "/models/new", {"field": "image", "value": LLAMA_IMAGE}),
           (f"{USAGE}.set_window", "/usage", {"v": "7d"}),
           (f"{ADMIN_STATE}.cortex_app___states___model_detail____model_detail_state.older_events", "/models/1", {}),
           (f"{ADMIN_STATE}.cortex_app___states___model_detail____model_detail_state.newer_events", "/models/1", {})]


def test_without_a_session_no_handler_reads_files_or_asks_the_engine(console, world):
    """The form's estimate reads the models dir as it is typed: without a session it is refused
    before it reads (no estimate comes back), as every other handler that does work is."""
    sock = RawSocket(console.url, console.url)
    try:
        for handler, page, payload in WORKING:
            updates = sock.call(handler, page, until=_to_login, **payload)
            assert _to_login(updates), (handler, updates)
            seen = json.dumps([u.get("delta", {}) for u in updates])
            assert "memory_estimate" not in seen and "tiny" not in seen, (handler, seen)
    finally:
        sock.close()


def test_a_foreign_origin_gets_no_websocket(console, world, docker_client):
    db, *_ = world
    before = _snapshot(db, console, docker_client)
    port = httpx.URL(console.url).port
    for foreign in ("http://evil.example", f"http://127.0.0.1:{port + 1}"):
        with pytest.raises(Refused) as refused:
            RawSocket(console.url, foreign)
        assert refused.value.status_code == 403
    assert _snapshot(db, console, docker_client) == before


def test_the_first_admin_needs_the_setup_code_then_a_session_works(console, world, docker_client):
    db, model_id, _, token_id, key_id = world
    code = re.search(r"setup code ([A-Z0-9]{4}(?:-[A-Z0-9]{4}){3})", console.output).group(1)
    form = {"username": "root", "password": PASSWORD, "confirm": PASSWORD}
    sock = RawSocket(console.url, console.url)
    try:
        before = _snapshot(db, console, docker_client)
        for wrong in ({}, {"setup_code": ""}, {"setup_code": "AAAA-BBBB-CCCC-DDDD"}):
            updates = sock.call(f"{AUTH}.create_first_admin", "/setup", form={**form, **wrong},
                                until=lambda u: "setup code" in _auth_error(u))
            assert "wrong setup code" in _auth_error(updates), updates
            assert _snapshot(db, console, docker_client) == before  # no admin, the code not used up
        # The control: with the code, the same handler makes the admin (and hands the page its session).
        sock.call(f"{AUTH}.create_first_admin", "/setup", form={**form, "setup_code": code},
                  until=lambda u: any(e.get("name") == "_call_script" for x in u for e in x.get("events", [])))
        assert auth.admin_exists(db)
    finally:
        sock.close()
    session = httpx.post(console.url + "/api/session", json={"username": "root", "password": PASSWORD}).json()["token"]
    signed = RawSocket(console.url, console.url, f"cortex_session={session}")
    try:
        for handler, args in ((f"{SETTINGS}.revoke_token", {"token_id": token_id}),
                              (f"{KEYS}.revoke_key", {"key_id": key_id}),
                              (f"{MODELS}.delete", {"model_id": model_id})):
            assert not _to_login(signed.call(handler, "/settings", wait=3, **args)), handler
    finally:
        signed.close()
    with db.connect() as conn:
        assert conn.execute(sa.text("SELECT revoked_at FROM api_token")).scalar_one() is not None
        assert conn.execute(sa.text("SELECT revoked_at FROM inference_key")).scalar_one() is not None
        assert conn.execute(sa.text("SELECT count(*) FROM model")).scalar_one() == 0


# Handlers that change nothing on the server: page loads and ticks (they read only for a
# signed-in admin), sign-in/out themselves, and what only sets the tab's own state (a form's
# input, a dialog closed). Those that do work for the tab are in WORKING.
NOT_MUTATING = {"load", "tick", "refresh", "open_new", "open_edit", "open_login", "open_setup", "require_admin",
                "toggle_advanced", "toggle_event", "setvar", "sign_in", "sign_out", "create_first_admin",
                "load_pulls", "pull_offer_open", "fit_offer_open"}
TAB_ONLY_SETTERS = {"set_kind", "set_name", "set_all_models", "set_model_allowed", "set_expiry", "set_rpm",
                    "set_log_query", "set_follow", "set_flag", "set_query", "set_state_filter", "set_new_url",
                    "set_new_format", "set_new_models", "set_token_name", "set_token_scope", "set_token_expiry"}


def test_the_list_names_every_handler_that_changes_something():
    """A new handler must be added to the calls above: a mutating one, or one that does work
    (WORKING), or be shown to change nothing and read nothing."""
    from cortex_app.states import (gpus, hosts, images, keys, model_detail, model_form,  # noqa: F401
                                   models, overview, settings, system, usage)
    from cortex_app.states.auth import AdminState, AuthState

    def states(cls):
        for sub in cls.__subclasses__():
            yield sub
            yield from states(sub)

    handlers = {f"{s.get_full_name()}.{name}" for s in (AuthState, AdminState, *states(AdminState))
                for name in s.event_handlers if name not in NOT_MUTATING | TAB_ONLY_SETTERS}
    assert handlers == {handler for handler, *_ in _mutating_calls(1, 1, 1, 1)} | {h for h, *_ in WORKING}
