"""How the console's background jobs are doing: each job's failure episodes, and when to say so.

A job that fails starts an episode: logged at once (and written to the console's journal),
then again only when the error changes (at most once a minute) or every ten minutes while it
lasts, so a failure that comes back days later is seen again, and one that repeats every
second does not flood the log. The first success after failures ends the episode (logged).
The decisions are plain functions of the job's status and the time; the System page shows
each job's status and last error.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

RELOG_CHANGED_S = 60.0  # a different error within an episode: logged again after this long
RELOG_SAME_S = 600.0  # the same error, still failing: a reminder this often


@dataclass
class JobStatus:
    name: str
    failing_since: Optional[float] = None  # unix time the current episode began (None: healthy)
    failures: int = 0  # in the current episode
    episodes: int = 0  # since the console started
    last_error: Optional[str] = None
    last_error_at: Optional[float] = None
    last_logged_at: Optional[float] = None
    last_ok_at: Optional[float] = None

    @property
    def failing(self) -> bool:
        return self.failing_since is not None


def job_failed(st: JobStatus, error: str, now: float) -> Optional[str]:
    """Record a failure; returns the line to log, or None when it would only repeat itself."""
    new_episode = st.failing_since is None
    if new_episode:
        st.failing_since, st.failures = now, 0
        st.episodes += 1
    st.failures += 1
    changed = error != st.last_error
    st.last_error, st.last_error_at = error, now
    since_logged = now - st.last_logged_at if st.last_logged_at is not None else None
    if new_episode:
        line = f"{st.name} job failing: {error}"
    elif changed and since_logged >= RELOG_CHANGED_S:
        line = f"{st.name} job still failing ({st.failures} times), now: {error}"
    elif since_logged >= RELOG_SAME_S:
        line = f"{st.name} job still failing ({st.failures} times in {now - st.failing_since:.0f} s): {error}"
    else:
        return None
    st.last_logged_at = now
    return line


def job_succeeded(st: JobStatus, now: float) -> Optional[str]:
    """Record a success; returns the line to log when it ends a failure episode."""
    st.last_ok_at = now
    if st.failing_since is None:
        return None
    line = f"{st.name} job recovered after {st.failures} failures in {now - st.failing_since:.0f} s"
    st.failing_since, st.failures = None, 0
    return line
