"""gateway/routing.py and gateway/keys.py: the pure decisions, as tables."""

import copy
import json

import pytest

from cortex_app.gateway import keys as k
from cortex_app.gateway.routing import GatewayError, Route, Snapshot, choose, is_usage_only, pick, prepare, servable, \
    usage_of
from cortex_app.validation import parse_request_defaults


def route(state="running", health="healthy", base="http://127.0.0.1:9", reason="", defaults=None):
    return Route(1, "m", "tiny", state, reason, health, base, "c1", defaults or {})


def replica(mid, state="running", health="healthy", alias="team"):
    return Route(mid, f"r{mid}", f"team-{mid}", state, "", health, "http://127.0.0.1:9" if state == "running" else None,
                 f"c{mid}", {}, alias)


@pytest.mark.parametrize("state,health,base,status,code,retry", [
    ("loading", "unknown", None, 503, "model_loading", 5),
    ("stopped", "unknown", None, 503, "model_not_running", None),
    ("stopping", "healthy", None, 503, "model_not_running", None),
    ("failed", "unknown", None, 503, "model_not_running", None),
    ("running", "unhealthy", "http://x:1", 503, "model_unhealthy", None),
    ("running", "healthy", None, 503, "model_unreachable", None),
    ("running", "host-unreachable", "http://x:1", 503, "host_unreachable", None),  # its host is silent
])
def test_only_a_running_healthy_model_gets_traffic(state, health, base, status, code, retry):
    with pytest.raises(GatewayError) as e:
        pick({"tiny": route(state, health, base)}, "tiny")
    assert (e.value.status, e.value.code, e.value.retry_after) == (status, code, retry)
    headers = dict(e.value.headers())
    assert (b"retry-after" in headers) == (retry is not None)
    body = json.loads(e.value.body())["error"]
    assert set(body) == {"message", "type", "param", "code"} and body["code"] == code


def test_a_stopped_model_is_refused_saying_an_admin_must_start_it():
    with pytest.raises(GatewayError) as e:
        pick({"tiny": route("stopped")}, "tiny")
    assert "an admin must start it" in e.value.message and "never starts" in e.value.message
    with pytest.raises(GatewayError) as failed:
        pick({"tiny": route("failed", reason="exited with code 139")}, "tiny")
    assert "(exited with code 139)" in failed.value.message


@pytest.mark.parametrize("name,status", [("nope", 404), ("", 400), (None, 400), (3, 400)])
def test_unknown_or_missing_model(name, status):
    with pytest.raises(GatewayError) as e:
        pick({"tiny": route()}, name)
    assert e.value.status == status and e.value.param == "model"


def test_running_and_unknown_health_is_served():
    r = route(health="unknown")
    assert pick({"tiny": r}, "tiny") is r and servable(r)
    assert not servable(route(health="unhealthy")) and not servable(route("loading"))


@pytest.mark.parametrize("endpoint,body,defaults,want,wants_usage", [
    # defaults fill only what the client left out
    ("chat", {"model": "t", "temperature": 0.1}, {"temperature": 0.9, "max_tokens": 64},
     {"model": "t", "temperature": 0.1, "max_tokens": 64}, False),
    # embeddings take no generation defaults
    ("embeddings", {"model": "t", "input": "x"}, {"max_tokens": 64}, {"model": "t", "input": "x"}, False),
    # a stream asks for the usage chunk the meter needs...
    ("chat", {"model": "t", "stream": True}, {},
     {"model": "t", "stream": True, "stream_options": {"include_usage": True}}, False),
    # ...keeping the client's other stream options
    ("completions", {"model": "t", "stream": True, "stream_options": {"x": 1}}, {},
     {"model": "t", "stream": True, "stream_options": {"x": 1, "include_usage": True}}, False),
    # a client that asked for it gets it
    ("chat", {"model": "t", "stream": True, "stream_options": {"include_usage": True}}, {},
     {"model": "t", "stream": True, "stream_options": {"include_usage": True}}, True),
])
def test_prepare(endpoint, body, defaults, want, wants_usage):
    before = copy.deepcopy(body)
    p = prepare(body, endpoint, defaults)
    assert p.body == want and p.client_wants_usage == wants_usage and p.stream == bool(body.get("stream"))
    assert body == before  # the client's request is not changed in place


def test_usage_chunks():
    final = {"choices": [], "usage": {"prompt_tokens": 25, "completion_tokens": 3, "total_tokens": 28}}
    assert usage_of(final) == (25, 3) and is_usage_only(final)
    last = {"choices": [{"text": ""}], "usage": {"prompt_tokens": 4, "completion_tokens": 2}}
    assert usage_of(last) == (4, 2) and not is_usage_only(last)
    assert usage_of({"usage": {"prompt_tokens": 7, "total_tokens": 7}}) == (7, 0)  # embeddings
    assert usage_of({"choices": [], "usage": None}) is None and not is_usage_only({"usage": None})


def test_keys_look_like_keys_and_verify():
    key, lookup = k.new_key()
    assert key.startswith(k.KEY_PREFIX) and k.lookup_of(key) == lookup and len(lookup) == k.LOOKUP_LEN
    view = k.KeyView(1, "ci", k.key_hash(key), None, None, None, False)
    assert k.verify(view, key, 0.0) is None
    assert k.verify(view, key[:-1] + ("A" if key[-1] != "A" else "B"), 0.0) == "invalid inference key"
    assert k.verify(None, key, 0.0) == "invalid inference key"
    assert "revoked" in k.verify(view.__class__(**{**view.__dict__, "revoked": True}), key, 0.0)
    assert "expired" in k.verify(view.__class__(**{**view.__dict__, "expires_ts": 10.0}), key, 10.0)
    assert k.verify(view.__class__(**{**view.__dict__, "expires_ts": 10.0}), key, 9.0) is None
    for not_a_key in ("ctx_abc", "sk-cortex-short-x", "sk-cortex-abcdefghij", "sk-other"):
        assert k.lookup_of(not_a_key) is None


def test_key_model_list():
    some = k.KeyView(1, "ci", "h", frozenset({"a"}), None, None, False)
    assert k.allows(some, "a") and not k.allows(some, "b")
    assert k.allows(k.KeyView(1, "ci", "h", None, None, None, False), "b")


def test_rate_limit_is_a_sliding_minute_per_key():
    rl = k.RateLimiter()
    assert [rl.take(1, 3, t) for t in (0.0, 1.0, 2.0)] == [0.0, 0.0, 0.0]
    assert rl.take(1, 3, 30.0) == pytest.approx(30.0)  # the oldest leaves the window at 60 s
    assert rl.take(2, 3, 30.0) == 0.0  # another key has its own window
    assert rl.take(1, 3, 60.5) == 0.0
    assert rl.take(1, None, 60.5) == 0.0 and rl.take(1, 0, 60.5) == 0.0  # no limit


@pytest.mark.parametrize("value,want", [
    ("", {}), (None, {}), ({}, {}),
    ('{"temperature": 0.7, "max_tokens": 512}', {"temperature": 0.7, "max_tokens": 512}),
    ({"stop": ["\n\n"], "seed": 4}, {"stop": ["\n\n"], "seed": 4}),
])
def test_request_defaults_accepted(value, want):
    assert parse_request_defaults(value) == want


@pytest.mark.parametrize("value,says", [
    ("{temperature: 1}", "JSON object"), ("[1]", "JSON object"), ({"model": "x"}, "cannot have a default"),
    ({"max_tokens": -1}, "whole number"), ({"max_tokens": 1.5}, "whole number"), ({"temperature": "hot"}, "number"),
    ({"temperature": True}, "number"), ({"stop": ["a"] * 5}, "stop"), ({"stream": True}, "cannot have a default"),
])
def test_request_defaults_refused(value, says):
    with pytest.raises(ValueError) as e:
        parse_request_defaults(value)
    assert says in str(e.value)


@pytest.mark.parametrize("body,param", [({"stream": "true"}, "stream"), ({"stream": 1}, "stream"),
                                        ({"stream": True, "stream_options": "x"}, "stream_options")])
def test_stream_fields_of_the_wrong_type_are_refused(body, param):
    """A truthy non-boolean `stream` that an engine would still stream must not slip past the
    meter (it would go through unmetered, buffered)."""
    with pytest.raises(GatewayError) as e:
        prepare({"model": "t", **body}, "chat", {})
    assert e.value.status == 400 and e.value.param == param


def test_an_alias_goes_to_the_replica_with_the_fewest_requests_in_flight():
    snap = Snapshot.of([replica(1), replica(2), replica(3), route()])
    assert choose(snap, "team", {1: 2, 2: 0, 3: 1}, {}).model_id == 2
    assert choose(snap, "team", {1: 1, 2: 1, 3: 1}, {1: 5, 2: 3, 3: 4}).model_id == 2  # equals: the one picked longest ago
    assert choose(snap, "team", {}, {}, avoid=[1]).model_id == 2  # one that just refused a connection is passed over
    assert choose(snap, "team-3", {3: 9}, {}).model_id == 3  # a served name is that model, however busy
    assert choose(snap, "tiny", {}, {}).served_name == "tiny"


def test_requests_in_turn_go_round_the_replicas():
    snap = Snapshot.of([replica(1), replica(2), replica(3)])
    last, seen = {}, []
    for n in range(6):
        r = choose(snap, "team", {}, last)
        last[r.model_id] = n
        seen.append(r.model_id)
    assert seen == [1, 2, 3, 1, 2, 3]


@pytest.mark.parametrize("states,code,retry", [
    ([("stopped", "unknown"), ("failed", "unknown")], "model_not_running", None),
    ([("stopped", "unknown"), ("loading", "unknown")], "model_loading", 5),
    ([("running", "unhealthy"), ("stopped", "unknown")], "model_unhealthy", None),
])
def test_an_alias_with_no_servable_replica_is_refused_and_nothing_starts(states, code, retry):
    snap = Snapshot.of([replica(i, st, h) for i, (st, h) in enumerate(states, 1)])
    with pytest.raises(GatewayError) as e:
        choose(snap, "team", {}, {})
    assert (e.value.status, e.value.code, e.value.retry_after) == (503, code, retry)
    if code == "model_not_running":
        assert "an admin must start one" in e.value.message and "never starts" in e.value.message


def test_models_lists_servable_models_and_aliases_with_a_servable_replica():
    snap = Snapshot.of([replica(1, "stopped"), replica(2), replica(3, "stopped", alias="idle"), route()])
    assert snap.listed() == ["team", "team-2", "tiny"]
