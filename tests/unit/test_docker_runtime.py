"""runtime/docker.py without an engine: the unreachable path (the reachable one is in
tests/integration/test_docker_runtime.py)."""

import socket
import threading
import time

import pytest

from cortex_app.runtime.docker import EngineUnreachable, client, engine_info
from cortex_app.runtime.docker_connect import ConnectFailed, await_answer
from cortex_app.runtime.endpoints import Endpoint


def test_missing_socket_is_reported_not_raised(tmp_path):
    info = engine_info(f"unix://{tmp_path}/docker.sock")
    assert info.reachable is False and info.version is None
    assert "no Docker Engine answers" in info.error and "DOCKER_HOST" in info.error


def test_closed_tcp_port_is_unreachable():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    try:
        client(f"tcp://127.0.0.1:{port}", timeout=2)
    except EngineUnreachable as exc:
        assert "connection refused" in str(exc)
    else:
        raise AssertionError("client() returned for a closed port")


def test_a_kept_client_waits_for_an_answer_with_fresh_tries():
    """docker_connect.await_answer on loopback: a listener whose accept queue is full drops new
    connections' first packets, as a host whose network is cut does. TCP would try such a
    connection again only after 1 s, then 3 s; fresh tries every 0.25 s see the queue freed
    within a fraction of a second. Nothing listening is said at once."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(0)
    port = srv.getsockname()[1]
    queued = [socket.create_connection(("127.0.0.1", port), timeout=1)]  # the queue's one place taken
    freed = threading.Event()

    def free():
        time.sleep(1.5)
        srv.accept()[0].close()
        freed.set()

    threading.Thread(target=free, daemon=True).start()
    t0 = time.monotonic()
    try:
        await_answer(Endpoint(f"tcp://127.0.0.1:{port}"), 6)
        took = time.monotonic() - t0
        assert freed.is_set() and 1.5 <= took < 2.0, took  # the kernel's own retry would come at 3 s
    finally:
        for s in queued + [srv]:
            s.close()
    t0 = time.monotonic()
    with pytest.raises(ConnectFailed, match=rf"nothing listens at 127.0.0.1:{port} \(connection refused\)"):
        await_answer(Endpoint(f"tcp://127.0.0.1:{port}"), 6)
    assert time.monotonic() - t0 < 0.5
