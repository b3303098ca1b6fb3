"""hosts.check_all's deadline: a check that hangs past its own timeout (a DNS lookup can; it
has none) is recorded unreachable at the deadline, and the others are recorded as they end."""

import threading
import time

from cortex_app import hosts
from cortex_app.models import Host
from cortex_app.runtime.types import EngineInfo
from cortex_app.settings import load_settings
from sqlmodel import Session


def test_a_hung_check_is_cut_off_at_the_deadline(migrated_db, tmp_path):
    bed_settings = load_settings({"CORTEX_DATA_DIR": str(tmp_path), "DOCKER_HOST": "unix:///run/none.sock"})
    with Session(migrated_db) as session:
        session.add(Host(name="hangs", endpoint="tcp://10.0.0.9:2376"))
        session.add(Host(name="answers", endpoint="tcp://10.0.0.10:2376"))
        session.commit()
    release = threading.Event()

    def check(target, timeout):
        url = target if isinstance(target, str) else target.url
        if "10.0.0.9" in url:
            release.wait(10)  # ignores its timeout
            return EngineInfo(host=url, reachable=True, version="late")
        return EngineInfo(host=url, reachable=True, version="27.0")

    t0 = time.perf_counter()
    result = hosts.check_all(migrated_db, bed_settings, check=check, timeout=0.5)
    took = time.perf_counter() - t0
    release.set()
    state = {h.name: h for h in hosts.list_hosts(migrated_db)}
    assert took < 0.5 + 1.3, took
    assert result.late == [state["hangs"].id]
    assert not state["hangs"].reachable and "no answer within 0.5 s" in state["hangs"].last_error
    assert state["answers"].reachable and state["answers"].engine_version == "27.0"
    assert state["local"].reachable
    time.sleep(0.2)  # the hung check ends now: what it found is not written over the verdict
    assert not hosts.get_host(migrated_db, state["hangs"].id).reachable
