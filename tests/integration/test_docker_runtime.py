from cortex_app.runtime.docker import engine_info


def test_engine_info_against_the_test_engine(docker_host, docker_client):
    info = engine_info(docker_host)
    assert info.reachable and info.error is None
    assert info.version == docker_client.version()["Version"]
    assert info.api_version
