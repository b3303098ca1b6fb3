"""The model form's small promises in Chromium: selects that can go back to the engine's
default, help text whose `code` shows as code, the GGUF count in the singular, and the alias
replicas share (saved; refused when it is a served name), and the memory estimate."""

import re

import sqlalchemy as sa
from playwright.sync_api import expect

from tests.e2e.conftest import sign_in


def _row(console, sql: str):
    """One row of the console's database."""
    engine = sa.create_engine(console.db_url)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text(sql)).one()
    finally:
        engine.dispose()


def _pick(page, select_id: str, option: str) -> None:
    page.locator(f"#{select_id}").click()
    page.get_by_role("option", name=option, exact=True).click()


def test_selects_go_back_to_the_engine_default(console, page):
    sign_in(page, console.url)
    page.goto(console.url + "/models/new")
    expect(page.locator("#gguf-count")).to_have_text("1 GGUF file found in the models dir")
    # `model` in the served name's help is code, not backticks.
    assert page.locator("code", has_text=re.compile(r"^model$")).count() == 1
    assert "`model`" not in page.content()
    page.locator("#field-name").fill("defaults")
    page.locator("#field-source").fill("tiny.gguf")
    page.locator("#toggle-advanced").click()
    _pick(page, "field-cache_type_k", "f32")
    _pick(page, "field-cache_type_k", "engine default")  # changed one's mind
    _pick(page, "field-cache_type_v", "q8_0")
    _pick(page, "field-flash_attn", "on")
    _pick(page, "field-flash_attn", "engine default")
    page.locator("#save").click()
    page.wait_for_url(re.compile(r".*/models/\d+$"))
    row = _row(console, "SELECT cache_type_k, cache_type_v, flash_attn FROM model")
    assert tuple(row) == (None, "q8_0", None)


def test_an_alias_is_saved_and_one_that_is_a_served_name_is_refused(console, page):
    sign_in(page, console.url)
    page.goto(console.url + "/models/new")
    page.locator("#field-name").fill("replica-one")
    page.locator("#field-source").fill("tiny.gguf")
    page.locator("#field-alias").fill("replica-one")  # its own served name (the name, by default)
    page.locator("#save").click()
    expect(page.locator("#error-alias")).to_contain_text("served name")
    page.locator("#field-alias").fill("team")
    page.locator("#save").click()
    page.wait_for_url(re.compile(r".*/models/\d+$"))
    (alias,) = _row(console, "SELECT alias FROM model WHERE name = 'replica-one'")
    assert alias == "team"


def test_the_form_and_the_detail_page_show_the_memory_estimate(console, page):
    sign_in(page, console.url)
    page.goto(console.url + "/models/new")
    page.locator("#field-name").fill("estimated")
    page.locator("#field-source").fill("tiny.gguf")
    estimate = page.locator("#form-estimate")
    expect(estimate).to_contain_text("MiB of memory")
    expect(estimate).to_contain_text("(256 tokens)")  # no context set: the GGUF's trained one
    page.locator("#field-context_size").fill("4096")
    expect(estimate).to_contain_text("(4,096 tokens)")  # it follows the settings as they are typed
    page.locator("#save").click()
    page.wait_for_url(re.compile(r".*/models/\d+$"))
    expect(page.locator("#memory-estimate")).to_contain_text("KV cache 2 (4,096 tokens)")
