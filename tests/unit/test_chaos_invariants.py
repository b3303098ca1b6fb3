"""bench/chaos_invariants.py: each check fires when its invariant breaks, and stays quiet
while the table and the containers agree (a referee that cannot fail would prove nothing)."""

from bench.chaos_invariants import (Ctr, Delivery, Event, Row, Snapshot, Tracker, agrees, around, disagreement,
                                    timeline_violations, webhook_violations)


def snap(t, containers=(), rows=(), wall=None):
    return Snapshot(t=t, wall=wall if wall is not None else 1000.0 + t, containers=tuple(containers),
                    rows=tuple(rows))


RUNNING = Row(1, "running", "c1", "h1")
OWN = Ctr("c1", 1, "running", "h1", restart_policy="no")


def test_a_converged_world_agrees_and_nothing_fires():
    t = Tracker()
    for i in range(30):
        s = snap(i * 0.1, [OWN], [RUNNING, Row(2, "stopped")])
        assert agrees(s) and t.check(s, able_since=0.0) == []


def test_a_restart_policy_other_than_no_fires_at_once():
    t = Tracker()
    [v] = t.check(snap(0, [Ctr("c1", 1, "running", "h1", restart_policy="unless-stopped")], [RUNNING]), 0.0)
    assert "restart policy unless-stopped" in v


def test_two_containers_of_one_model_fire_but_a_forged_second_one_does_not():
    t = Tracker()
    two = [OWN, Ctr("c2", 1, "created", "h1")]
    assert any("2 containers at once" in v for v in t.check(snap(0, two, [RUNNING]), 0.0))
    assert Tracker().check(snap(0, [OWN, Ctr("f", 1, "running", "x", forged=True)], [RUNNING]), 0.0) == []


def test_an_unowned_running_container_must_be_gone_within_a_second_of_able_time():
    t = Tracker()
    stray = Ctr("s", 2, "running", "h2")  # model 2 is stopped: nobody asked for it
    rows = [RUNNING, Row(2, "stopped")]
    assert t.check(snap(0.0, [OWN, stray], rows), able_since=None) == []
    assert t.check(snap(5.0, [OWN, stray], rows), able_since=None) == []  # console down: no clock
    assert t.check(snap(5.5, [OWN, stray], rows), able_since=5.0) == []
    [v] = t.check(snap(6.1, [OWN, stray], rows), able_since=5.0)
    assert "container s (running) of model 2 (row stopped) still there 1.10 s" in v
    assert t.check(snap(6.2, [OWN, stray], rows), able_since=5.0) == []  # reported once
    assert not agrees(snap(6.2, [OWN, stray], rows))


def test_containers_of_an_operation_in_flight_are_owned():
    rows = [Row(1, "starting")]
    assert Tracker().check(snap(10, [Ctr("n", 1, "running", "h")], rows), 0.0) == []
    rows = [Row(1, "stopping")]
    assert Tracker().check(snap(10, [Ctr("n", 1, "running", "h")], rows), 0.0) == []


def test_an_active_row_without_its_container_must_agree_within_a_second():
    t = Tracker()
    dead = Ctr("c1", 1, "exited", "h1")
    assert t.check(snap(0.0, [dead], [RUNNING]), 0.0) == []
    assert t.check(snap(0.9, [dead], [RUNNING]), 0.0) == []
    [v] = t.check(snap(1.2, [dead], [RUNNING]), 0.0)
    assert v == "model 1 is running but its container is exited (1.20 s)"
    other = Tracker()
    assert other.check(snap(0.6, [Ctr("c1", 1, "running", "other")], [RUNNING]), 0.5) == []
    [v] = other.check(snap(2.0, [Ctr("c1", 1, "running", "other")], [RUNNING]), 0.5)
    assert "another spec hash" in v
    # Fixed in time: the clock restarts for the next disagreement.
    t2 = Tracker()
    t2.check(snap(0.0, [dead], [RUNNING]), 0.0)
    assert t2.check(snap(0.5, [], [Row(1, "failed")]), 0.0) == []


def test_a_row_stuck_starting_fires_past_its_bound_counting_only_able_time():
    t = Tracker(stuck_bound_s=75)
    row = Row(1, "starting", state_changed_at=1000.0)
    assert t.check(snap(70, [], [row]), able_since=0.0) == []
    assert t.check(snap(200, [], [row]), able_since=150.0) == []  # able only 50 s
    [v] = t.check(snap(76, [], [row]), able_since=0.0)
    assert "starting for over 75 s" in v


def test_timelines_must_be_legal_paths():
    ok = [Event(1, 1, "stopped", "starting"), Event(2, 1, "starting", "loading"), Event(3, 1, "loading", "running"),
          Event(4, 1, "running", "failed"), Event(5, 1, "failed", "starting"), Event(6, 1, "starting", "failed"),
          Event(7, 1, "failed", "stopped", "model deleted")]
    assert timeline_violations(ok) == []
    assert timeline_violations([Event(1, 1, "stopped", "running")]) == [
        "model 1: event 1 stopped -> running is not a legal move"]
    gap = [Event(1, 1, "stopped", "starting"), Event(2, 1, "loading", "running")]
    assert timeline_violations(gap) == ["model 1: event 2 leaves loading, but the model was starting"]
    assert timeline_violations([Event(1, 1, "stopped", "stopped", "model deleted"),
                                Event(2, 1, "stopped", "starting")]) == ["model 1: event 2 after it was deleted"]


def test_webhooks_one_id_per_change_all_arrived_in_order():
    events = [Event(1, 1, "stopped", "starting"), Event(2, 1, "starting", "loading"), Event(3, 1, "loading", "running"),
              Event(4, 1, "running", "failed")]
    deliveries = [Delivery(1, "m1", "model.running", 1, "delivered"), Delivery(2, "m2", "model.failed", 1, "delivered")]
    assert webhook_violations(events, deliveries, [("m1", 1), ("m2", 1), ("m2", 1)], 0) == []  # a replay is fine
    assert webhook_violations(events, deliveries, [("m2", 1), ("m1", 1)], 0) == ["model 1: webhooks arrived out of order"]
    assert webhook_violations(events, deliveries[:1], [("m1", 1)], 0) == [
        "model 1: state changes ['model.running', 'model.failed'] but deliveries ['model.running']"]
    missing = webhook_violations(events, deliveries, [("m1", 1)], 0)
    assert missing == ["delivery m2 is marked delivered but never arrived"]
    assert webhook_violations(events, deliveries, [("m1", 1), ("m2", 1), ("zz", 1)], 2) == [
        "2 deliveries failed signature verification", "received an id the outbox never made: zz"]
    pending = [deliveries[0], Delivery(2, "m2", "model.failed", 1, "pending")]
    assert webhook_violations(events, pending, [("m1", 1)], 0) == ["delivery m2 (model.failed, model 1) is pending"]


def test_a_seed_is_a_schedule_and_cover_goes_through_every_kind():
    from bench.chaos import WEIGHTS, schedule

    assert schedule(7, 50) == schedule(7, 50) and schedule(7, 50) != schedule(8, 50)
    covered = schedule(7, 200, cover=True)
    assert {s.kind for s in covered[:len(WEIGHTS)]} == set(WEIGHTS)
    assert covered[len(WEIGHTS) - 1].kind == "engine_outage"  # last: engine faults wait it out


def test_a_violation_names_its_subject_and_shows_what_was_seen_around_it():
    """What a reader of a violation needs: the row and the containers of its model, snapshot by
    snapshot (a line each time they changed), timed from when the condition began."""
    t = Tracker()
    other = Ctr("o1", 7, "running", "h7")  # another model's: not shown
    rows = [RUNNING, Row(7, "running", "o1", "h7")]
    snaps = [snap(0.0, [OWN, other], rows), snap(0.05, [OWN, other], rows),
             snap(0.1, [Ctr("c1", 1, "exited", "h1"), other], rows),
             snap(0.6, [Ctr("c1", 1, "exited", "h1"), other], rows),
             snap(1.2, [Ctr("c1", 1, "exited", "h1"), other], rows)]
    found = [v for s in snaps for v in t.check(s, able_since=0.0)]
    [v] = found
    assert "model 1 is running but its container is exited (1.10 s)" in v
    assert (v.model_id, v.container_id, v.since) == (1, "c1", 0.1)
    assert around(v, snaps) == [
        "  -0.10 s  row 1: running, container c1  containers: c1 running spec h1",
        "  +0.00 s  row 1: running, container c1  containers: c1 exited spec h1",
    ]
    stray = Ctr("s", 2, "running", "h2", forged=True)
    t = Tracker()
    [v] = [v for s in (snap(0.0, [stray], [Row(2, "stopped")]), snap(1.1, [stray], [Row(2, "stopped")]))
           for v in t.check(s, able_since=0.0)]
    assert (v.model_id, v.container_id, v.since) == (2, "s", 0.0)
    assert around(v, [snap(0.0, [stray], [Row(2, "stopped")])]) == [
        "  +0.00 s  row 2: stopped  containers: s running (the harness's) spec h2"]


def test_a_faults_truth_is_its_own_models():
    """Time to truth of a fault that hit model 1 ends when model 1's row and containers agree,
    though model 2 is still starting (another fault's doing); the world's faults wait for all."""
    s = snap(0.0, [Ctr("c1", 1, "exited", "h1")], [Row(1, "failed"), Row(2, "starting")])
    assert disagreement(s, 1) is None
    assert disagreement(s, 2) == "model 2 is starting"
    assert disagreement(s) == "model 2 is starting"
    stray = snap(0.0, [Ctr("x", 3, "running", "h3")], [Row(1, "failed"), Row(3, "stopped")])
    assert disagreement(stray, 1) is None
    assert disagreement(stray, 3) == "container x (running) of model 3 (row stopped)"
