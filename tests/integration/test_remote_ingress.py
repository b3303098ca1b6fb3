"""A model on another host answers the console and no one else (issue 24, item 1): on the real
multi-host test bed (a TLS engine in a network namespace, tests/hostbed.py), a console started
as `make up` starts it runs the real llama-server and the vLLM stand-in there. From a third
namespace that stands for anyone on that host's network, every port the host has open is found
(all 65,535 tried) and asked every route of both engines, in clear and over TLS without the
console's certificate: none answers as an engine would. The gateway, through the console,
answers; and a capture of every packet between the console and that host holds none of the
prompt or the answer in clear."""

from __future__ import annotations

import asyncio
import json
import secrets
import shutil
import socket
import subprocess
import sys
import threading
import time

import openai
import pytest

from tests.conftest import INGRESS_IMAGE, LLAMA_IMAGE, ROOT, VLLM_STANDIN_IMAGE
from tests.hostbed import outsider, remote_host

ADMIN, PASSWORD = "admin", "ingress-test-pass-1"
# Every route of llama-server (tools/server) and the routes of vLLM's OpenAI server that the
# stand-in serves: /v1/* and those vLLM leaves open without a key (/health, /metrics, /ping,
# /version, /invocations).
LLAMA_ROUTES = [("GET", "/health"), ("GET", "/v1/health"), ("GET", "/models"), ("GET", "/v1/models"),
                ("GET", "/props"), ("GET", "/slots"), ("GET", "/metrics"), ("POST", "/completion"),
                ("POST", "/completions"), ("POST", "/v1/completions"), ("POST", "/chat/completions"),
                ("POST", "/v1/chat/completions"), ("POST", "/tokenize"), ("POST", "/detokenize"),
                ("POST", "/embedding"), ("POST", "/v1/embeddings"), ("POST", "/infill"), ("POST", "/apply-template"),
                ("POST", "/v1/messages"), ("POST", "/v1/responses"), ("POST", "/v1/rerank")]
VLLM_ROUTES = [("GET", "/health"), ("GET", "/metrics"), ("GET", "/ping"), ("POST", "/ping"), ("GET", "/version"),
               ("POST", "/invocations"), ("GET", "/v1/models"), ("POST", "/v1/chat/completions"),
               ("POST", "/v1/completions")]
# What an engine answers on any of them (a 2xx, or these words): none may come back.
ENGINE_WORDS = ("stand-in", "vllm", "llama", "chatcmpl", "\"object\"", "n_ctx", "\"ok\"", "\"status\"")


@pytest.fixture
def gpu_box(docker_host):
    with remote_host("cxi-tls", 18, images=(LLAMA_IMAGE, VLLM_STANDIN_IMAGE, INGRESS_IMAGE),
                     images_from=docker_host) as h:
        yield h


class Capture:
    """Every frame that crosses one interface (a raw AF_PACKET socket, as tcpdump takes them),
    kept in memory while it runs."""

    def __init__(self, interface: str):
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.ntohs(0x0003))
        self.sock.bind((interface, 0))
        self.sock.settimeout(0.2)
        self.frames: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.frames.append(self.sock.recv(65536))
            except TimeoutError:
                continue
            except OSError:
                return

    def stop(self) -> bytes:
        time.sleep(0.3)  # the last frames
        self._stop.set()
        self._thread.join(5)
        self.sock.close()
        return b"".join(self.frames)


def _scan(netns: str, address: str, routes: list) -> dict:
    r = subprocess.run(["nsenter", f"--net={netns}", sys.executable, str(ROOT / "tests/portscan.py"), address,
                        json.dumps(routes)], capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_a_remote_model_answers_the_console_only_and_in_no_clear_text(start_console, tmp_path, tiny_gguf, gpu_box,
                                                                      docker_host):
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(tiny_gguf, models / "tiny.gguf")
    # The remote host's models dir is this machine's, at the same path (one filesystem).
    console = start_console(CORTEX_MODELS_DIR=str(models), CORTEX_LLAMACPP_IMAGE=LLAMA_IMAGE,
                            CORTEX_VLLM_IMAGE=VLLM_STANDIN_IMAGE, CORTEX_ADMIN_USER=ADMIN,
                            CORTEX_ADMIN_PASSWORD=PASSWORD, DOCKER_HOST=docker_host)
    assert console.sign_in(ADMIN, PASSWORD).status_code == 200
    (tmp_path / "hf").mkdir()
    r = console.call("POST", "/api/hosts", json={"name": "box", "endpoint": gpu_box.tls_url, "address": gpu_box.ip,
                                                 "models_dir": str(models), "hf_cache_dir": str(tmp_path / "hf"),
                                                 "tls_ca": gpu_box.pki.ca_pem, "tls_cert": gpu_box.client_cert,
                                                 "tls_key": gpu_box.client_key})
    assert r.status_code == 201, r.text
    ids = {}
    for name, spec in (("far-llama", {"engine": "llamacpp", "source": "tiny.gguf", "threads": 1,
                                      "extra_args": ["--poll", "0"]}),
                       ("far-vllm", {"engine": "vllm", "source": "org/far"})):
        r = console.call("POST", "/api/models", json={"name": name, "host": "box", **spec})
        assert r.status_code == 201, r.text
        ids[name] = r.json()["id"]
        assert console.start_ready(ids[name])["state"] == "running", console.tail()
    rows = {n: console.model(i) for n, i in ids.items()}
    assert all(m["host_port"] is None for m in rows.values()), rows  # nothing of theirs published

    r = console.call("POST", "/api/keys", json={"name": "k"})
    assert r.status_code == 201, r.text
    client = openai.OpenAI(base_url=f"{console.url}/v1", api_key=r.json()["key"], max_retries=0, timeout=60)

    # Anyone on the host's network: every open port of the host, asked every route.
    paths = [f"/m/{m['container_id'][:12]}/{8080 if n == 'far-llama' else 8000}" for n, m in rows.items()]
    routes = sorted({(m, p) for m, p in LLAMA_ROUTES + VLLM_ROUTES}
                    | {(m, prefix + p) for prefix in paths for m, p in LLAMA_ROUTES + VLLM_ROUTES})
    with outsider(gpu_box, "cxi-out", 19) as netns:
        t0 = time.monotonic()
        found = _scan(netns, gpu_box.ip, [list(x) for x in routes])
        took = time.monotonic() - t0
    ingress_port = int(console.model(ids["far-llama"])["address"].split(":")[2].split("/")[0])
    print(f"\noutsider's scan of {gpu_box.ip}: open ports {found['open']} ({took:.1f} s, "
          f"{len(found['answers'])} requests); the ingress is on {ingress_port}")
    # The scan sees what is there: the engine's own TLS port and the ingress's, nothing else.
    assert set(found["open"]) == {2376, ingress_port}, found["open"]
    for port, mode, method, path, status, text in found["answers"]:
        answered = isinstance(status, int) and 200 <= status < 300
        assert not answered and not any(w in text.lower() for w in ENGINE_WORDS), (port, mode, method, path,
                                                                                    status, text)
    # The ingress asks for the console's certificate, and gets none: nginx's 400, nothing more.
    no_cert = [a for a in found["answers"] if a[0] == ingress_port and a[1] == "tls"]
    assert no_cert and all(a[4] == 400 and "certificate" in a[5].lower() for a in no_cert), no_cert[:3]

    # The console reaches both, and the wire between it and that host carries no clear text.
    marker, control = f"prompt-{secrets.token_hex(8)}", f"control-{secrets.token_hex(8)}"
    capture = Capture(gpu_box.outside)
    try:
        answers = []
        for name in ids:
            msg = [{"role": "user", "content": f"say {marker}"}]
            answers.append(client.chat.completions.create(model=name, messages=msg, max_tokens=4)
                           .choices[0].message.content)
            answers.append("".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
                model=name, messages=msg, max_tokens=4, stream=True) if c.choices))
        # What the capture would show of clear text: a datagram to that host, in clear.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.sendto(control.encode(), (gpu_box.ip, 9))
    finally:
        wire = capture.stop()
    assert all(answers), answers
    assert control.encode() in wire, "the capture saw nothing in clear: it cannot show that nothing was"
    assert b"\x17\x03\x03" in wire  # TLS application data went by
    assert marker.encode() not in wire
    assert b"stand-in reply" not in wire  # the vLLM stand-in's answer, in clear on its own side
    assert b"chat.completion" not in wire



def _ingresses(h) -> list[dict]:
    import docker

    c = docker.DockerClient(base_url=h.socket, timeout=30)
    try:
        return [c.api.inspect_container(x["Id"]) for x in c.api.containers(all=True, filters={"label": "cortex.ingress=true"})]
    finally:
        c.close()


def test_the_console_alone_keeps_each_hosts_ingress(bed, gpu_box):
    """Made by the first Start there, hardened, made again when it dies or the CA changes, and
    gone with its network when the host is removed."""
    import docker
    import sqlalchemy as sa
    from sqlmodel import Session

    from cortex_app import hosts
    from cortex_app.ingress import nginx
    from cortex_app.ingress.keeper import Ingresses
    from cortex_app.models import Installation, ModelState

    host = hosts.add_host(bed.db, bed.settings, name="box", endpoint_url=gpu_box.tls_url, tls_ca=gpu_box.pki.ca_pem,
                          tls_cert=gpu_box.client_cert, tls_key=gpu_box.client_key)
    assert _ingresses(gpu_box) == []  # adding a host makes nothing there
    m = bed.llama("far", host="box")
    assert bed.start_ready(m.id).state is ModelState.RUNNING, bed.row(m.id).state_reason
    (first,) = _ingresses(gpu_box)
    hc = first["HostConfig"]
    assert hc["RestartPolicy"]["Name"] == "no" and hc["CapDrop"] == ["ALL"] and first["Config"]["User"] == "65534:65534"
    assert "no-new-privileges:true" in hc["SecurityOpt"] and hc["PidsLimit"] and hc["Memory"]
    assert list(hc["PortBindings"]) == ["8443/tcp"] and hc["PortBindings"]["8443/tcp"][0]["HostIp"] == gpu_box.ip
    # Nothing secret in what `docker inspect` shows: no key in its command or environment.
    assert "PRIVATE KEY" not in json.dumps(first["Config"])
    c = docker.DockerClient(base_url=gpu_box.socket, timeout=30)
    try:
        model = c.api.inspect_container(bed.row(m.id).container_id)
        assert model["HostConfig"]["PortBindings"] in ({}, None)  # the model publishes nothing
        assert list(model["NetworkSettings"]["Networks"]) == [nginx.network_name(bed.lc.runtime.instance)]

        # Killed behind the console's back: the next round makes it again, and the model answers.
        c.containers.get(first["Id"]).kill()
        bed.lc.ingresses.sync()
        (second,) = _ingresses(gpu_box)
        assert second["Id"] != first["Id"] and second["State"]["Running"]
        assert asyncio.run(bed.rec.probe_running()) == 1 and bed.row(m.id).health.value == "healthy"

        # A new CA (its key no longer unseals, say): the ingress is made again to trust it.
        with Session(bed.db) as s:
            s.execute(sa.update(Installation).values(ingress_ca_cert=None, ingress_ca_key=None))
            s.commit()
        fresh = Ingresses(bed.db, bed.settings, bed.lc.runtimes)
        fresh.sync()
        (third,) = _ingresses(gpu_box)
        assert third["Id"] != second["Id"]
        assert fresh.authority().fingerprint != bed.lc.ingresses.authority().fingerprint

        bed.lc.stop(m.id, actor="admin:test")
        bed.lc.delete(m.id, actor="admin:test")
        hosts.remove_host(bed.db, bed.settings, host.id, bed.lc.runtime.instance)
        assert _ingresses(gpu_box) == []
        assert not c.networks.list(names=[nginx.network_name(bed.lc.runtime.instance)])
    finally:
        c.close()
