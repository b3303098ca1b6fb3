"""The admin's whole workflow in Debian's Chromium against the production build, with the
real engine and the real llama-server: first run, sign-in, the models table, the form,
Start -> loading -> running live, logs, Stop, Delete, and drift seen in the open page."""

import re
import shutil

import httpx
import pytest
import sqlalchemy as sa
from playwright.sync_api import expect

from cortex_app import auth, crud
from cortex_app.db import make_engine
from cortex_app.engines.spec import LABEL_MODEL_ID
from tests.conftest import LLAMA_IMAGE
from tests.e2e.conftest import ADMIN, LOGIN_PAGE, HOME_PAGE, PASSWORD, sign_in

# A 1M-token f32 KV cache makes the tiny model's real load take ~1.3 s: long enough to
# see `loading` in the page before `running`.
SLOW_LOAD_ARGS = "-t 1 --poll 0 -c 1048576 --cache-type-k f32 --cache-type-v f32"


@pytest.fixture(scope="module")
def console(start_console, tmp_path_factory, tiny_gguf, docker_host):
    models = tmp_path_factory.mktemp("models")
    shutil.copy(tiny_gguf, models / "tiny.gguf")
    return start_console(DOCKER_HOST=docker_host, CORTEX_MODELS_DIR=str(models), CORTEX_LLAMACPP_IMAGE=LLAMA_IMAGE)


@pytest.fixture(scope="module")
def db(console):
    engine = make_engine(console.db_url)
    yield engine
    engine.dispose()


def create_through_form(page, url: str, name: str, extra_args: str) -> None:
    page.goto(url + "/models/new")
    page.locator("#field-name").fill(name)
    page.locator("#field-source").fill("tiny.gguf")
    page.locator("#toggle-advanced").click()
    page.locator("#field-extra_args").fill(extra_args)
    page.locator("#save").click()
    page.wait_for_url("**/models/*")


def test_1_first_run_creates_the_admin_and_signs_in(console, page, db):
    # make up printed a one-time setup code: only who sees the console's output can claim it.
    code = re.search(r"setup code ([A-Z0-9]{4}(?:-[A-Z0-9]{4}){3})", console.output).group(1)
    page.goto(console.url + "/models")
    page.wait_for_url("**/setup")
    page.locator("#field-setup_code").fill("AAAA-BBBB-CCCC-DDDD")
    page.locator("#field-username").fill(ADMIN)
    page.locator("#field-password").fill(PASSWORD)
    page.locator("#field-confirm").fill(PASSWORD)
    page.locator("#create-admin").click()
    expect(page.locator("#auth-error")).to_contain_text("wrong setup code")
    assert not auth.admin_exists(db)  # refused: nothing created
    page.locator("#field-setup_code").fill(code.lower())  # as typed by hand: case does not matter
    page.locator("#field-username").fill(ADMIN)
    page.locator("#field-password").fill("short")
    page.locator("#field-confirm").fill("short")
    page.locator("#create-admin").click()
    expect(page.get_by_text("use at least 10 characters")).to_be_visible()
    page.locator("#field-password").fill(PASSWORD)
    page.locator("#field-confirm").fill(PASSWORD)
    page.locator("#create-admin").click()
    page.wait_for_url(HOME_PAGE)  # the Overview: nothing yet
    expect(page.locator("#overview-count-running")).to_contain_text("0")
    page.goto(console.url + "/models")
    page.locator("#no-models").wait_for()
    page.reload()  # the session survives a reload
    page.locator("#no-models").wait_for()
    page.locator("#sign-out").click()
    page.wait_for_url(LOGIN_PAGE)
    page.goto(console.url + "/models")
    page.wait_for_url(LOGIN_PAGE)  # signed out means signed out
    page.goto(console.url + "/setup")
    page.wait_for_url(LOGIN_PAGE)  # and there is no second first run


def test_2_wrong_password_is_refused_and_slowed(console, page):
    page.goto(console.url + "/login")
    for _ in range(3):
        page.locator("#field-username").fill(ADMIN)
        page.locator("#field-password").fill("wrong-password")
        page.locator("#sign-in").click()
        expect(page.locator("#auth-error")).to_contain_text("wrong username or password")
    page.locator("#sign-in").click()
    expect(page.locator("#auth-error")).to_contain_text("too many wrong passwords; try again in")


def test_3_unauthenticated_visits_redirect_and_api_says_401(console, page):
    import time

    time.sleep(2)  # the slow-down from the previous test has passed
    for path in ("/models", "/models/new", "/gpus", "/system", "/models/1"):
        page.goto(console.url + path)
        page.wait_for_url(LOGIN_PAGE)
    assert httpx.get(console.url + "/api/models").status_code == 401
    forged = httpx.get(console.url + "/api/models", cookies={"cortex_session": "forged-token"})
    assert forged.status_code == 401
    sign_in(page, console.url)
    [cookie] = [c for c in page.context.cookies() if c["name"] == "cortex_session"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert "cortex_session" not in page.evaluate("document.cookie")  # no script in the page reads it
    token = cookie["value"]
    ok = httpx.get(console.url + "/api/models", cookies={"cortex_session": token})
    assert ok.status_code == 200 and ok.json() == {"models": []}
    # Signed out elsewhere (another tab, a script): this tab goes to sign-in at its next tick.
    page.goto(console.url + "/models")
    page.locator("#no-models").wait_for()
    assert httpx.delete(console.url + "/api/session", cookies={"cortex_session": token}).status_code == 200
    page.wait_for_url(LOGIN_PAGE, timeout=10_000)


def test_4_bad_form_shows_field_errors_and_saves_nothing(console, page, db):
    sign_in(page, console.url)
    page.goto(console.url + "/models/new")
    page.locator("#field-name").fill("Bad Name")
    page.locator("#field-source").fill("../../etc/passwd.gguf")
    page.locator("#toggle-advanced").click()
    page.locator("#field-extra_args").fill("--port 9999")
    page.locator("#save").click()
    expect(page.locator("#form-invalid")).to_be_visible()
    expect(page.locator("#error-name")).to_contain_text("lowercase letters")
    expect(page.locator("#error-source")).to_contain_text("'..'")
    expect(page.locator("#error-extra_args")).to_contain_text("--port is set by the console")
    assert crud.list_models(db) == []


def test_5_create_start_watch_logs_stop_delete(console, page, db, docker_client):
    sign_in(page, console.url)
    create_through_form(page, console.url, "tiny", SLOW_LOAD_ARGS)
    [model] = crud.list_models(db)
    assert model.extra_args == SLOW_LOAD_ARGS.split()

    page.goto(console.url + "/models")
    row = page.locator("#model-row-tiny")
    badge = row.locator(".state-badge")
    expect(badge).to_have_text("stopped")
    row.locator(".act-start").click()
    expect(badge).to_have_text("loading", timeout=10_000)  # no reload: the page follows the table
    expect(badge).to_have_text("running", timeout=30_000)
    expect(row).to_contain_text("http://127.0.0.1:")

    page.get_by_role("link", name="tiny").click()
    page.wait_for_url(f"**/models/{model.id}")
    expect(page.locator("#logs")).to_contain_text("llama_server", timeout=10_000)  # the real server's lines
    expect(page.locator(".event-row").first).to_contain_text("loading → running")
    page.locator("#log-search").fill("load_model")
    expect(page.locator("#logs")).to_contain_text("load_model")

    page.goto(console.url + "/models")
    row.locator(".act-stop").click()
    expect(badge).to_have_text("stopped", timeout=30_000)
    assert docker_client.containers.list(all=True, filters={"label": f"{LABEL_MODEL_ID}={model.id}"}) == []
    with db.connect() as conn:  # the events say how the actions came
        actors = conn.execute(sa.text("SELECT to_state, actor FROM model_event WHERE model_id = :m AND actor"
                                      " != 'reconciler'"), {"m": model.id}).all()
    assert ("starting", f"admin:{ADMIN} (browser)") in actors and ("stopped", f"admin:{ADMIN} (browser)") in actors
    row.locator(".act-delete").click()
    page.locator(".confirm-delete").click()
    expect(page.locator("#no-models")).to_be_visible()
    assert crud.list_models(db) == []


def test_6_a_container_killed_outside_turns_failed_in_the_open_page(console, page, db, docker_client):
    sign_in(page, console.url)
    create_through_form(page, console.url, "victim", "-t 1 --poll 0")
    page.goto(console.url + "/models")
    row = page.locator("#model-row-victim")
    row.locator(".act-start").click()
    expect(row.locator(".state-badge")).to_have_text("running", timeout=30_000)
    [model] = [m for m in crud.list_models(db) if m.name == "victim"]
    docker_client.containers.get(model.container_id).kill()
    expect(row.locator(".state-badge")).to_have_text("failed", timeout=5_000)
    assert "exited with code 137" in row.get_attribute("title")
    expect(row.locator(".row-reason")).to_contain_text("exited with code 137")  # inline, not only on hover
    assert row.locator(".act-stop").count() == 0 and row.locator(".act-start").count() == 1  # what applies
    row.locator(".act-delete").click()
    page.locator(".confirm-delete").click()
    expect(page.locator("#no-models")).to_be_visible()


def test_7_gpu_page_explains_the_missing_gpu(console, page):
    sign_in(page, console.url)
    page.goto(console.url + "/gpus")
    expect(page.locator("#gpu-notice")).to_contain_text("No NVIDIA driver found on this host")


def test_8_system_page_says_how_models_are_wired(console, page):
    sign_in(page, console.url)
    page.goto(console.url + "/system")
    expect(page.locator("#model-wiring")).to_contain_text("console on the host; models reached on loopback ports")
