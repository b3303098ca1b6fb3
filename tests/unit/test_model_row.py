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
