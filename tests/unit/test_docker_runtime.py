"""runtime/docker.py without an engine: the unreachable path (the reachable one is in
tests/integration/test_docker_runtime.py)."""

import socket

from cortex_app.runtime.docker import EngineUnreachable, client, engine_info


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
