"""The detail page's decisions: where the latency chart breaks, and what the logs box says."""

import pytest

from cortex_app.models import ModelState
from cortex_app.states.model_detail import latency_points, logs_note


def test_the_latency_line_breaks_between_runs_and_at_failed_probes():
    history = [[1000.0, 5.0], [1005.0, None], [1010.0, 6.0], [2000.0, 7.0], [2005.0, 8.0]]
    points = latency_points(history, gap_s=16)
    assert [p["ms"] for p in points] == [5.0, None, 6.0, None, 7.0, 8.0]  # a run's gap is a null point
    assert points[3]["t"] == ""
    assert latency_points([], 16) == []


@pytest.mark.parametrize("state, container, kept, note", [
    (ModelState.RUNNING, True, True, ""),
    (ModelState.FAILED, False, True, "lines kept when it failed"),
    (ModelState.FAILED, False, False, "no lines were kept when it failed"),
    (ModelState.STOPPED, False, True, "no container: logs show while it runs"),  # an older failure's lines: not shown
])
def test_kept_lines_are_only_for_a_failed_model(state, container, kept, note):
    assert logs_note(state, container, kept) == note
