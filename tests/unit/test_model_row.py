"""What the Models page offers per state (states/models.model_row): only the actions that apply."""

from datetime import timedelta

import pytest

from cortex_app.models import Engine, Model, ModelState as S, utcnow
from cortex_app.states.models import model_row


@pytest.mark.parametrize("state, start, stop, delete", [
    (S.STOPPED, True, False, True),
    (S.STARTING, False, False, False),
    (S.LOADING, False, True, False),
    (S.RUNNING, False, True, False),
    (S.STOPPING, False, False, False),
    (S.FAILED, True, False, True),  # started again or deleted; never Start and Stop together
])
def test_each_state_offers_only_what_applies(state, start, stop, delete):
    now = utcnow()
    m = Model(id=1, name="m", served_name="m", engine=Engine.LLAMACPP, image="i", source="a.gguf", state=state,
              state_reason="why", host_port=40000, ready_at=now - timedelta(minutes=3))
    row = model_row(m, stale=False, now=now)
    assert (row["can_start"], row["can_stop"], row["can_delete"]) == (start, stop, delete)
    assert row["reason"] == "why"


def test_a_model_whose_host_is_unreachable_says_so_and_keeps_its_state():
    from cortex_app.models import Health, Host

    now = utcnow()
    m = Model(id=1, name="m", served_name="m", engine=Engine.LLAMACPP, image="i", source="a.gguf", host_id=2,
              state=S.RUNNING, health=Health.UNKNOWN, host_port=40000, ready_at=now, auto_host=True)
    away = Host(id=2, name="gpu-2", endpoint="tcp://10.0.0.2:2376", reachable=False)
    row = model_row(m, stale=False, now=now, host=away, base_url="http://10.0.0.2:40000")
    assert (row["state"], row["health"], row["host"]) == ("running", "host unreachable", "gpu-2 (auto)")
    assert row["endpoint"] == "http://10.0.0.2:40000/v1"
    back = Host(id=2, name="gpu-2", endpoint="tcp://10.0.0.2:2376", reachable=True)
    assert model_row(m, stale=False, now=now, host=back)["health"] == "unknown"


def test_a_model_behind_another_hosts_ingress_shows_the_gateway_not_the_ingress():
    from cortex_app.models import Host

    now = utcnow()
    m = Model(id=1, name="m", served_name="m", engine=Engine.LLAMACPP, image="i", source="a.gguf", host_id=2,
              state=S.RUNNING, container_id="abc123def456789", ready_at=now)
    box = Host(id=2, name="gpu-2", endpoint="tcp://10.0.0.2:2376", reachable=True)
    row = model_row(m, stale=False, now=now, host=box, base_url="https://10.0.0.2:32768/m/abc123def456/8080",
                    gateway="http://gpu-host:3000")
    assert row["endpoint"] == "http://gpu-host:3000/v1"  # only the console reaches the ingress
