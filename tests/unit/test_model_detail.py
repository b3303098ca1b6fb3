"""The detail page's decisions: where the latency chart breaks, and what the logs box says."""

import pytest

from cortex_app.models import Host, ModelState
from cortex_app.states.model_detail import latency_points, logs_note, silent


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


@pytest.mark.parametrize("endpoint, reachable, away, says", [
    (None, False, {1}, False),  # the console's own engine: the page asks it (its outage is the banner's)
    ("tcp://gpu:2376", None, set(), False),  # not checked yet
    ("tcp://gpu:2376", True, set(), False),
    ("tcp://gpu:2376", False, set(), True),  # its last check found it silent
    ("tcp://gpu:2376", True, {7}, True),  # the last pass did
])
def test_a_page_asks_no_host_known_to_be_silent(endpoint, reachable, away, says):
    host = Host(id=1 if endpoint is None else 7, name="gpu", endpoint=endpoint, reachable=reachable)
    assert silent(host, away) is says
