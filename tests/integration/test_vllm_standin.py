"""cortex-test/vllm-standin: a STAND-IN for vLLM (which needs a GPU). These tests pin down
the parts of vLLM's behaviour the console relies on, so the stand-in stays faithful."""

import json
import time

import httpx

from tests.conftest import VLLM_STANDIN_IMAGE, free_port, wait_http


def _run(docker_client, labels, args, **env):
    port = free_port()
    c = docker_client.containers.run(
        VLLM_STANDIN_IMAGE, ["--host", "0.0.0.0", "--port", "8000", *args], detach=True, init=True,
        labels=labels, restart_policy={"Name": "no"}, environment=env, ports={"8000/tcp": ("127.0.0.1", port)})
    return c, f"http://127.0.0.1:{port}"


def test_unknown_flag_is_rejected_like_vllm_argparse(docker_client, test_labels):
    c, _ = _run(docker_client, test_labels, ["--model", "org/m", "--no-such-flag", "1"])
    assert c.wait(timeout=30)["StatusCode"] == 2
    assert "unrecognized arguments: --no-such-flag" in c.logs().decode()


def test_loading_delay_then_models_and_chat(docker_client, test_labels):
    c, base = _run(docker_client, test_labels,
                   ["--model", "org/m", "--served-model-name", "m", "--tensor-parallel-size", "1",
                    "--gpu-memory-utilization", "0.85", "--dtype", "bfloat16", "--max-model-len", "4096",
                    "--enforce-eager", "--trust-remote-code", "--enable-prefix-caching", "--max-num-seqs", "8",
                    "--api-key", "sk-test"],
                   STANDIN_LOAD_DELAY="2")
    t0 = time.monotonic()
    time.sleep(0.5)
    try:  # like vLLM: nothing listens while the engine loads
        httpx.get(f"{base}/health", timeout=1)
        raise AssertionError("the stand-in answered while 'loading'")
    except httpx.TransportError:
        pass
    wait_http(f"{base}/health", timeout=30)
    assert time.monotonic() - t0 >= 2
    auth = {"Authorization": "Bearer sk-test"}
    assert httpx.get(f"{base}/v1/models").status_code == 401
    assert [m["id"] for m in httpx.get(f"{base}/v1/models", headers=auth).json()["data"]] == ["m"]

    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    plain = httpx.post(f"{base}/v1/chat/completions", json=body, headers=auth).json()
    assert plain["choices"][0]["message"]["content"] == "stand-in reply from m"
    with httpx.stream("POST", f"{base}/v1/chat/completions", json={**body, "stream": True}, headers=auth) as r:
        events = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    assert "".join(json.loads(e)["choices"][0]["delta"]["content"] for e in events[:-1]) == "stand-in reply from m"
    assert httpx.post(f"{base}/v1/chat/completions", json={**body, "model": "x"}, headers=auth).status_code == 404
    assert "sk-test" not in c.logs().decode(), "the API key must not reach the logs"


def test_failed_load_exits_with_its_code(docker_client, test_labels):
    c, _ = _run(docker_client, test_labels, ["--model", "org/m"], STANDIN_EXIT_CODE="3")
    assert c.wait(timeout=30)["StatusCode"] == 3
