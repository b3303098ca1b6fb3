"""Every HTTP route against a real console, for each kind of caller: nobody, the browser's
cookie alone, a read / operate / admin API token, an expired and a revoked one. Each answer's
exact status, and where refused, nothing changed (the model row, its events, its containers)."""

from __future__ import annotations

import re
import shutil
from datetime import timedelta

import httpx
import pytest
import sqlalchemy as sa

from cortex_app import auth
from cortex_app.db import make_engine
from cortex_app.models import ApiToken, utcnow
from tests.conftest import LLAMA_IMAGE

ADMIN, PASSWORD = "admin", "security-test-pass-1"
CALLERS = ("nobody", "cookie", "read", "operate", "admin", "expired", "revoked")
BODY = {"name": "tiny", "engine": "llamacpp", "source": "tiny.gguf", "threads": 1, "extra_args": ["--poll", "0"]}


def _row(nobody, cookie, read, operate, admin, expired, revoked) -> dict[str, int]:
    return dict(zip(CALLERS, (nobody, cookie, read, operate, admin, expired, revoked)))


READ = _row(401, 200, 200, 200, 200, 401, 401)
PUBLIC = _row(200, 200, 200, 200, 200, 200, 200)
# Writes never take the cookie (another page of this host could make the browser send it).
OPERATE = _row(401, 401, 403, 202, 202, 401, 401)
# (method, path) -> expected status per caller. {id}: a stopped model, made for each call.
MATRIX = {
    ("GET", "/api/health"): PUBLIC,
    ("GET", "/api/ready"): PUBLIC,
    ("GET", "/metrics"): READ,
    ("GET", "/api/models"): READ,
    ("GET", "/api/models/{model_id}"): READ,
    ("POST", "/api/models"): _row(401, 401, 403, 403, 201, 401, 401),
    ("PUT", "/api/models/{model_id}"): _row(401, 401, 403, 403, 200, 401, 401),
    ("DELETE", "/api/models/{model_id}"): _row(401, 401, 403, 403, 204, 401, 401),
    ("POST", "/api/models/{model_id}/start"): OPERATE,
    ("POST", "/api/models/{model_id}/stop"): _row(401, 401, 403, 200, 200, 401, 401),
    ("POST", "/api/models/{model_id}/apply"): OPERATE,
    ("POST", "/api/session"): _row(401, 401, 401, 401, 401, 401, 401),  # wrong credentials: for anyone
    ("POST", "/api/session/adopt"): _row(401, 401, 401, 401, 401, 401, 401),  # an unknown sign-in code: for anyone
    # {host_id}: host 1, the console's own engine (checked; never removed: 409). A new host's
    # body is refused by its validation (422: no TLS) before any connection is tried.
    ("GET", "/api/hosts"): READ,
    ("POST", "/api/hosts"): _row(401, 401, 403, 403, 422, 401, 401),
    ("POST", "/api/hosts/{host_id}/check"): _row(401, 401, 403, 200, 200, 401, 401),
    ("DELETE", "/api/hosts/{host_id}"): _row(401, 401, 403, 403, 409, 401, 401),
    ("DELETE", "/api/session"): PUBLIC,  # signing out is never refused (last: it ends the cookie's session)
}
HOST_BODY = {"name": "gpu-2", "endpoint": "tcp://10.255.255.1:2376"}
# The route must find a running model (and leaves it running when refused).
NEEDS_RUNNING = {"/api/models/{model_id}/stop", "/api/models/{model_id}/apply"}


def test_the_matrix_names_every_route():
    from cortex_app.api import health, hosts, models, monitoring, session

    routes = {(method, r.path) for router in (health.router, hosts.router, models.router, monitoring.router,
                                               session.router)
              for r in router.routes for method in r.methods}
    assert routes == set(MATRIX)


@pytest.fixture(scope="module")
def console(start_console, tmp_path_factory, tiny_gguf, docker_host):
    models = tmp_path_factory.mktemp("models")
    shutil.copy(tiny_gguf, models / "tiny.gguf")
    c = start_console(DOCKER_HOST=docker_host, CORTEX_MODELS_DIR=str(models), CORTEX_LLAMACPP_IMAGE=LLAMA_IMAGE,
                      CORTEX_ADMIN_USER=ADMIN, CORTEX_ADMIN_PASSWORD=PASSWORD)
    yield c
    c.stop()


@pytest.fixture(scope="module")
def credentials(console) -> dict[str, dict]:
    """Request keyword arguments per caller; console.token is a session of its own for set-up."""
    cookie = console.sign_in(ADMIN, PASSWORD).json()["token"]
    console.sign_in(ADMIN, PASSWORD)  # console.token: the set-up's own session
    db = make_engine(console.db_url)
    tokens = {scope: auth.create_api_token(db, f"matrix-{scope}", scope) for scope in ("read", "operate", "admin")}
    expired = auth.create_api_token(db, "matrix-expired", "admin", 7)
    revoked = auth.create_api_token(db, "matrix-revoked", "admin")
    with db.begin() as conn:  # a week and a second later
        conn.execute(sa.update(ApiToken).where(ApiToken.name == "matrix-expired")
                     .values(expires_at=utcnow() - timedelta(seconds=1)))
        revoked_id = conn.execute(sa.select(ApiToken.id).where(ApiToken.name == "matrix-revoked")).scalar_one()
    auth.revoke_api_token(db, revoked_id)  # as the Settings page's Revoke does
    db.dispose()

    def bearer(token):
        return {"headers": {"Authorization": f"Bearer {token}"}}

    return {"nobody": {}, "cookie": {"cookies": {"cortex_session": cookie}},
            **{scope: bearer(t) for scope, t in tokens.items()},
            "expired": bearer(expired), "revoked": bearer(revoked)}


def _snapshot(console, docker_client) -> tuple:
    """Everything a refused call could have changed; not what the reconciler moves by itself
    (its health writes bump `updated_at`, so the configuration's columns are compared instead)."""
    db = make_engine(console.db_url)
    with db.connect() as conn:
        models = conn.execute(sa.text("SELECT id, name, served_name, engine, image, source, threads, context_size,"
                                      " extra_args, extra_env, request_defaults, notes, state, container_id, spec_hash"
                                      " FROM model ORDER BY id")).all()
        events = conn.execute(sa.text("SELECT count(*) FROM model_event")).scalar_one()
        sessions = conn.execute(sa.text("SELECT count(*) FROM admin_session")).scalar_one()
        hosts = conn.execute(sa.text("SELECT id, name, endpoint FROM host ORDER BY id")).all()  # not the checks'
    db.dispose()
    containers = sorted(c.id for c in console.containers(docker_client))
    return models, events, sessions, containers, hosts


def _fresh_model(console, running: bool) -> int:
    for m in console.call("GET", "/api/models").json()["models"]:
        if m["state"] not in ("stopped", "failed"):
            console.wait_model(m["id"], "running", "failed")  # an allowed start or apply left it loading
            console.call("POST", f"/api/models/{m['id']}/stop")
        assert console.call("DELETE", f"/api/models/{m['id']}").status_code == 204
    created = console.call("POST", "/api/models", json=BODY)
    assert created.status_code == 201, created.text
    mid = created.json()["id"]
    if running:
        assert console.start_ready(mid)["state"] == "running"
    return mid


@pytest.mark.parametrize("method, path", list(MATRIX))
def test_each_route_answers_each_caller_exactly(console, credentials, docker_client, method, path):
    for who in CALLERS:
        mid = _fresh_model(console, running=path in NEEDS_RUNNING) if "{model_id}" in path else None
        if mid is None and path == "/api/models":
            _fresh_model(console, running=False)  # POST makes a second one next to it
        url = path.replace("{model_id}", str(mid)).replace("{host_id}", "1")
        kwargs = {"json": {**BODY, "name": "made", "served_name": "made"}} if method == "POST" and path == "/api/models" \
            else {"json": HOST_BODY} if method == "POST" and path == "/api/hosts" \
            else {"json": {**BODY, "context_size": 256}} if method == "PUT" \
            else {"json": {"username": f"nobody-{who}", "password": "wrong-password"}} if path == "/api/session" \
            and method == "POST" \
            else {"json": {"code": "not-a-code"}, "headers": {"Origin": console.url}} if path.endswith("/adopt") \
            else {}
        before = _snapshot(console, docker_client)
        headers = {**kwargs.pop("headers", {}), **credentials[who].get("headers", {})}
        r = httpx.request(method, console.url + url, timeout=60, headers=headers, **kwargs,
                          **{k: v for k, v in credentials[who].items() if k != "headers"})
        expected = MATRIX[(method, path)][who]
        assert r.status_code == expected, (who, method, url, r.status_code, r.text[:300])
        if expected in (401, 403) and path != "/api/session":
            assert _snapshot(console, docker_client) == before, (who, method, url)
            if expected == 403:
                assert "this token's scope is" in r.json()["detail"]
        if path in ("/api/health", "/api/ready"):  # details only for a live caller
            detailed = "version" in r.json() if path == "/api/health" else "checks" in r.json()
            assert detailed is (who not in ("nobody", "expired", "revoked")), (who, r.json())
        if method == "DELETE" and path == "/api/session":
            signed_out = who == "cookie"  # the cookie's session ended; nobody else's did
            assert (_snapshot(console, docker_client)[2] == before[2] - 1) is signed_out


def test_only_an_admin_may_override_the_fit_check(console, credentials):
    """Start or Apply despite the fit check is an admin's decision: an operate token that may
    start models may not pass `override_fit` (403, nothing started)."""
    mid = _fresh_model(console, running=False)
    for verb in ("start", "apply"):
        r = httpx.post(f"{console.url}/api/models/{mid}/{verb}?override_fit=true", timeout=30,
                       **credentials["operate"])
        assert r.status_code == 403 and "needs admin" in r.json()["detail"], r.text
    assert console.call("GET", f"/api/models/{mid}").json()["state"] == "stopped"


def test_a_read_token_sees_no_address_where_an_engine_listens(console, credentials):
    """Whoever reaches an engine's port skips every gateway key: a read token (a dashboard) is
    told nothing of where engines listen; operate and admin see each model's full address."""
    mid = _fresh_model(console, running=True)
    port = console.call("GET", f"/api/models/{mid}").json()["host_port"]
    assert port
    for who in ("read", "operate", "admin"):  # (the matrix above ended the cookie's session)
        one = httpx.get(f"{console.url}/api/models/{mid}", timeout=30, **credentials[who]).json()
        [listed] = [m for m in httpx.get(f"{console.url}/api/models", timeout=30, **credentials[who]).json()["models"]
                    if m["id"] == mid]
        hosts = httpx.get(f"{console.url}/api/hosts", timeout=30, **credentials[who]).json()["hosts"]
        if who == "read":
            for shown in (one, listed, *hosts):
                assert f":{port}" not in str(shown) and "127.0.0.1" not in str(shown), shown
                assert not {"host_port", "address", "container_id", "endpoint", "credential", "error"} & set(shown), \
                    shown
            assert one["state"] == "running" and hosts[0]["name"] == "local"
        else:
            assert one["host_port"] == listed["host_port"] == port
            assert one["address"] == listed["address"] and one["address"].endswith(f":{port}"), one
            assert hosts[0]["endpoint"] == console.env["DOCKER_HOST"], hosts[0]
    assert httpx.get(f"{console.call('GET', f'/api/models/{mid}').json()['address']}/health",
                     timeout=5).status_code == 200  # the address is where the console reaches it


def test_the_session_cookie_is_httponly_and_set_only_for_the_consoles_own_pages(console):
    """The sign-in page's second step (states/auth.py): its one-time code, posted by the page,
    becomes the session's HttpOnly cookie; never for another origin, never twice, and a session
    token is no such code."""
    import asyncio

    r = httpx.post(console.url + "/api/session", json={"username": ADMIN, "password": PASSWORD})
    cookie = r.headers["set-cookie"].lower()
    assert r.status_code == 200 and "httponly" in cookie and "samesite=strict" in cookie
    assert "secure" not in cookie  # served over http: a Secure cookie would be dropped
    db = make_engine(console.db_url)
    code = asyncio.run(auth.sign_in(db, ADMIN, PASSWORD, "127.0.0.1", handoff=True))  # as the page's sign-in
    db.dispose()

    def adopt(value, **headers):
        return httpx.post(console.url + "/api/session/adopt", json={"code": value}, headers=headers)

    for headers in ({"Origin": "http://evil.example"}, {}):
        refused = adopt(code, **headers)
        assert refused.status_code == 403 and "set-cookie" not in refused.headers
    own = adopt(code, Origin=console.url)
    assert own.status_code == 200 and "httponly" in own.headers["set-cookie"].lower()
    token = own.cookies.get("cortex_session")
    assert token and token != code
    assert httpx.get(console.url + "/api/models", cookies={"cortex_session": token}).status_code == 200
    for used in (code, r.json()["token"]):  # used up; and a session token is no code
        again = adopt(used, Origin=console.url)
        assert again.status_code == 401 and "set-cookie" not in again.headers


@pytest.mark.parametrize("path, button", [("/login/", "sign-in"), ("/setup/", "create-admin")])
def test_the_prerendered_sign_in_forms_cannot_submit_before_the_page_is_live(console, path, button):
    """The pages are prerendered: until React owns the form it is plain HTML, and a click would
    submit it natively, as GET /login/?username=…&password=… (into history and access logs). Its
    button ships disabled and is enabled once the page is hydrated (the e2e sign-in clicks it)."""
    html = httpx.get(console.url + path).text
    tag = re.search(rf'<button[^>]*id="{button}"[^>]*>', html)
    assert tag and re.search(r"\sdisabled(=|\s|>)", tag.group(0)), tag


@pytest.mark.parametrize("public_url, secure", [("http://gpu-host:3000", False), ("https://cortex.example", True)])
def test_the_cookie_is_secure_when_the_console_is_served_over_https(public_url, secure):
    from cortex_app.api.session import cookie_options

    options = cookie_options(public_url)
    assert options["secure"] is secure and options["httponly"] is True and options["samesite"] == "strict"
