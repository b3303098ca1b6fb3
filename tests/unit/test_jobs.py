"""reconcile/jobs.py: when a job's failures are logged (episodes, rate-limited) and when its
recovery is."""

from cortex_app.reconcile.jobs import RELOG_CHANGED_S, RELOG_SAME_S, JobStatus, job_failed, job_succeeded


def test_an_episode_is_logged_at_once_then_rate_limited():
    st = JobStatus("reconcile")
    assert job_failed(st, "engine gone", 100.0) == "reconcile job failing: engine gone"
    assert st.failing and st.episodes == 1 and st.failures == 1
    assert job_failed(st, "engine gone", 101.0) is None  # the same error, a second later
    assert job_failed(st, "timeout", 102.0) is None  # another error, but within a minute
    assert job_failed(st, "timeout", 100.0 + RELOG_CHANGED_S) is None  # not a change any more
    assert job_failed(st, "engine gone", 100.0 + RELOG_CHANGED_S + 1) == (
        "reconcile job still failing (5 times), now: engine gone")
    assert job_failed(st, "engine gone", 200.0 + RELOG_SAME_S).startswith(
        "reconcile job still failing (6 times in ")
    assert (st.last_error, st.last_error_at) == ("engine gone", 200.0 + RELOG_SAME_S)


def test_recovery_ends_the_episode_and_a_later_failure_is_seen_again():
    st = JobStatus("probes")
    assert job_succeeded(st, 1.0) is None and st.last_ok_at == 1.0
    job_failed(st, "boom", 10.0)
    job_failed(st, "boom", 11.0)
    assert job_succeeded(st, 40.0) == "probes job recovered after 2 failures in 30 s"
    assert not st.failing and st.failures == 0
    # Days later, the same error: a new episode, logged again (not "seen once per process").
    assert job_failed(st, "boom", 3 * 86400.0) == "probes job failing: boom"
    assert st.episodes == 2
