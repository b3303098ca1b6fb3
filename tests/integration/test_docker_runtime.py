from cortex_app.runtime.docker import engine_info


def test_engine_info_against_the_test_engine(docker_host, docker_client):
    info = engine_info(docker_host)
    assert info.reachable and info.error is None
    assert info.version == docker_client.version()["Version"]
    assert info.api_version


def _busybox_spec(name: str, args: tuple[str, ...], model_id: int = 4242):
    from cortex_app.engines.spec import ContainerSpec

    return ContainerSpec(name=name, image="cortex-test/busybox:latest", args=args, env={"A": "1"},
                         container_port=8080, model_id=model_id, model_name="rt", engine="llamacpp")


def test_list_managed_logs_and_events(docker_host, docker_client, test_labels):
    import threading
    import uuid

    from cortex_app.runtime.docker import DockerRuntime

    rt = DockerRuntime(docker_host, extra_labels=test_labels)
    docker_client.containers.run("cortex-test/busybox:latest", ["true"], labels=test_labels)  # unmanaged
    seen: list[dict] = []
    stream_ready = threading.Event()

    def watch():
        stream_ready.set()
        for ev in rt.events(since=int(__import__("time").time()) - 1):
            if ev.get("Actor", {}).get("Attributes", {}).get("cortex.model-id") == "4242":
                seen.append(ev)
                if ev.get("Action") == "die":
                    return

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    stream_ready.wait()
    name = f"cortex-rt-{uuid.uuid4().hex[:6]}"
    info = rt.create_and_start(_busybox_spec(name, ("sh", "-c", "echo one; echo two; exit 4")), host_port=0)
    t.join(timeout=20)
    assert [e["Action"] for e in seen][-1] == "die"
    assert seen[-1]["Actor"]["Attributes"]["exitCode"] == "4"

    managed = rt.list_managed()
    assert [c.id for c in managed if c.labels.get("cortex.test") == test_labels["cortex.test"]] == [info.id]
    assert any(c.model_id == 4242 and c.spec_hash for c in managed)
    got = rt.inspect(info.id)
    assert got.state == "exited" and got.exit_code == 4 and got.restart_policy == "no"
    assert rt.logs_tail(info.id, 1).strip() == "two"
    assert rt.stop_and_remove(info.id) == 4
    assert rt.inspect(info.id) is None and rt.stop_and_remove(info.id) is None
    rt.close()


def test_engine_errors_become_runtime_errors(docker_host, test_labels):
    import pytest

    from cortex_app.runtime.docker import ContainerConflict, DockerRuntime, EngineUnreachable, ImageMissing

    rt = DockerRuntime(docker_host, extra_labels=test_labels)
    spec = _busybox_spec("cortex-rt-conflict", ("sleep", "30"))
    with pytest.raises(ImageMissing, match="cortex-test/nope:1 is not on the Docker Engine"):
        import dataclasses
        rt.create(dataclasses.replace(spec, image="cortex-test/nope:1"), host_port=0)
    first = rt.create(spec, host_port=0)
    try:
        with pytest.raises(ContainerConflict):
            rt.create(spec, host_port=0)
    finally:
        rt.remove(first.id)
    rt.close()
    with pytest.raises(EngineUnreachable, match="DOCKER_HOST"):
        DockerRuntime("unix:///nonexistent/docker.sock").list_managed()


def test_taken_host_port_is_named_and_leaves_no_container(docker_host, docker_client, test_labels):
    import socket

    import pytest

    from cortex_app.runtime.docker import DockerRuntime, PortTaken

    rt = DockerRuntime(docker_host, extra_labels=test_labels)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(PortTaken, match=f"host port {port} is already in use"):
            rt.create_and_start(_busybox_spec("cortex-rt-port", ("sleep", "30")), host_port=port)
    assert docker_client.containers.list(all=True, filters={"name": "cortex-rt-port"}) == []
    rt.close()
