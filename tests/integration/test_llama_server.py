"""The real llama-server in cortex-test/llama-server, driven through the Docker SDK the way
the console will drive model containers: restart policy `no`, init, loopback port."""

import json

import httpx

from tests.conftest import LLAMA_IMAGE, free_port, wait_http


def test_start_health_chat_stream_stop_remove(docker_client, test_labels):
    port = free_port()
    c = docker_client.containers.run(
        LLAMA_IMAGE,
        ["-m", "/opt/models/tiny.gguf", "--host", "0.0.0.0", "--port", "8080", "--alias", "tiny",
         "-t", "1", "--poll", "0", "-c", "256"],
        detach=True, init=True, labels=test_labels, restart_policy={"Name": "no"},
        ports={"8080/tcp": ("127.0.0.1", port)},
    )
    c.reload()
    assert c.attrs["HostConfig"]["RestartPolicy"]["Name"] == "no"
    base = f"http://127.0.0.1:{port}"

    health = wait_http(f"{base}/health", timeout=60)
    assert health.json() == {"status": "ok"}
    assert [m["id"] for m in httpx.get(f"{base}/v1/models").json()["data"]] == ["tiny"]

    body = {"model": "tiny", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 8}
    plain = httpx.post(f"{base}/v1/chat/completions", json=body, timeout=30).json()
    text = plain["choices"][0]["message"]["content"]
    assert plain["usage"]["completion_tokens"] == 8
    assert text.strip() and text.isprintable()

    chunks = []
    with httpx.stream("POST", f"{base}/v1/chat/completions", json={**body, "stream": True}, timeout=30) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("data: "):
                chunks.append(line[6:])
    assert chunks[-1] == "[DONE]"
    deltas = [json.loads(c)["choices"][0]["delta"].get("content") or "" for c in chunks[:-1]]
    assert "".join(deltas).strip() and len(deltas) >= 8

    c.stop(timeout=10)
    c.reload()
    # init=True forwards SIGTERM to llama-server, which exits on its own (not killed: 137).
    assert c.attrs["State"]["ExitCode"] != 137
    c.remove()
    assert not docker_client.containers.list(all=True, filters={"id": c.id})


def test_health_is_503_while_loading_then_200(docker_client, test_labels):
    """What the console's probes must read as 'loading', not 'dead'. A large context on the
    tiny model stretches llama-server's load to ~150 ms here; polling every 10 ms sees it."""
    port = free_port()
    docker_client.containers.run(
        LLAMA_IMAGE,
        ["-m", "/opt/models/tiny.gguf", "--host", "0.0.0.0", "--port", "8080", "-t", "1", "--poll", "0",
         "-c", "262144", "--parallel", "8"],
        detach=True, init=True, labels=test_labels, restart_policy={"Name": "no"},
        ports={"8080/tcp": ("127.0.0.1", port)},
    )
    seen = []
    wait_http(f"http://127.0.0.1:{port}/health", timeout=120,
              ok=lambda r: seen.append(r.status_code) or r.status_code == 200, interval=0.01)
    assert seen[-1] == 200
    assert 503 in seen, f"never saw the loading state, only {sorted(set(seen))}"
