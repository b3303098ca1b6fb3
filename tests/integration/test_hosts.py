"""Hosts against real Docker Engines: the console's own, one behind TLS in a network namespace,
one reached over ssh in another (tests/hostbed.py). Adding checks the connection first and
says what failed; credentials are sealed and never shown; the periodic check gives each host
its own deadline, so a host whose network went silent never holds up the others."""

from __future__ import annotations

import http.server
import os
import ssl
import threading
import time

import httpx
import pytest
import sqlalchemy as sa
from sqlmodel import Session, select

from cortex_app import hosts
from cortex_app.models import ConsoleEvent, WebhookDelivery
from cortex_app.runtime.endpoints import fingerprint
from tests.hostbed import Pki, RemoteHost


@pytest.fixture(scope="module")
def remote():
    tls = RemoteHost("cxh-tls", 7, tls=True, ssh=False)
    ssh = RemoteHost("cxh-ssh", 8, tls=False, ssh=True)
    try:
        tls.up()
        ssh.up()
        yield tls, ssh
    finally:
        tls.down()
        ssh.down()


def _tls(h: RemoteHost, **over) -> dict:
    return dict(endpoint_url=h.tls_url, tls_ca=h.pki.ca_pem, tls_cert=h.client_cert, tls_key=h.client_key) | over


def _refused(db, settings, problem: str, words: str, **kw) -> str:
    before = len(hosts.list_hosts(db))
    with pytest.raises(hosts.HostInvalid) as err:
        hosts.add_host(db, settings, **({"name": "h"} | kw))
    assert err.value.problem == problem, str(err.value)
    assert words in str(err.value), str(err.value)
    assert len(hosts.list_hosts(db)) == before  # nothing saved
    return str(err.value)


def test_the_console_engine_is_host_1_and_stays(migrated_db, bed_settings):
    [local] = hosts.list_hosts(migrated_db)
    assert (local.id, local.name, local.endpoint, local.reachable) == (1, "local", None, None)
    checked = hosts.check_host(migrated_db, bed_settings, 1)
    assert checked.reachable and checked.engine_version and checked.last_seen_at is not None
    row = hosts.host_json(checked, bed_settings)
    assert row["endpoint"] == bed_settings.docker_host and row["local"] and row["state"] == "reachable"
    with pytest.raises(hosts.HostInvalid, match="always a host"):
        hosts.remove_host(migrated_db, bed_settings, 1, None)
    # The same engine cannot be added a second time under another name (nor any socket here).
    with pytest.raises(hosts.HostInvalid, match="a unix socket is this machine's, whose engine is host local"):
        hosts.add_host(migrated_db, bed_settings, name="again", endpoint_url=bed_settings.docker_host)


def test_a_tls_host_is_checked_before_it_is_saved_and_its_secrets_stay_sealed(migrated_db, bed_settings, remote,
                                                                             monkeypatch):
    db, settings = migrated_db, bed_settings
    h, _ = remote
    stranger = Pki("stranger")
    cert, key = stranger.issue("someone else")
    # Bad input is refused before any connection, with what is wrong.
    for kw, words in ((dict(endpoint_url=h.tls_url.replace("tcp://", "http://")), "Docker's own form"),
                      (dict(endpoint_url=h.tls_url, tls_ca="", tls_cert="", tls_key=""), "without TLS anyone"),
                      (_tls(h, tls_key=key), "does not belong to the client certificate"),
                      (_tls(h, tls_ca="not a pem"), "CA certificate: not a PEM"),
                      (dict(_tls(h), name="bad name!"), "name: 1 to 64")):
        with pytest.raises(hosts.HostInvalid, match=words):
            hosts.add_host(db, settings, **({"name": "h"} | kw))
    # The connection fails, and the error says how.
    _refused(db, settings, "tls", "the CA you gave did not sign", **_tls(h, tls_ca=stranger.ca_pem))
    _refused(db, settings, "tls", "refused the console's client certificate", **_tls(h, tls_cert=cert, tls_key=key))
    _refused(db, settings, "unreachable", "connection refused", **_tls(h, endpoint_url=f"tcp://{h.ip}:2399"))

    t0 = time.perf_counter()
    added = hosts.add_host(db, settings, name="gpu-tls", **_tls(h))
    took = time.perf_counter() - t0
    assert added.reachable and added.engine_version.startswith("20.10") and added.address == h.ip
    assert took < 2, took
    row = hosts.host_json(added, settings)
    assert row["credential"].startswith("TLS client certificate, valid until")
    assert "PRIVATE" not in str(row) and h.client_key.splitlines()[1] not in str(row)
    with db.connect() as conn:
        raw = conn.execute(sa.text("SELECT tls_ca, tls_cert, tls_key FROM host WHERE name = 'gpu-tls'")).one()
    assert all(v.startswith("fernet:") for v in raw), "credentials are stored sealed"
    assert h.client_key.splitlines()[1] not in str(raw)
    # Checked again later through what was stored (unsealed, in memory files), which are closed
    # with each check's client, failed checks too. The process's own CA bundle and proxy (as
    # many machines set them) play no part.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/nonexistent/ca-bundle.pem")
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")

    def memfds() -> int:
        n = 0
        for fd in os.listdir("/proc/self/fd"):
            try:
                n += "memfd:cortex-" in os.readlink(f"/proc/self/fd/{fd}")
            except OSError:
                pass
        return n
    before = memfds()
    assert hosts.check_host(db, settings, added.id).reachable
    for _ in range(5):
        with pytest.raises(hosts.HostInvalid):
            hosts.add_host(db, settings, name="x", **_tls(h, tls_cert=cert, tls_key=key))
    assert memfds() == before
    with pytest.raises(hosts.HostInvalid, match="is host gpu-tls already"):
        hosts.add_host(db, settings, name="twice", **_tls(h))
    hosts.remove_host(db, settings, added.id, None)
    assert [x.name for x in hosts.list_hosts(db)] == ["local"]


def test_an_https_server_that_is_no_docker_engine_is_named_as_such(migrated_db, bed_settings, tmp_path):
    pki = Pki("web")
    cert, key = pki.issue("127.0.0.1", ip="127.0.0.1")
    (tmp_path / "c.pem").write_text(cert)
    (tmp_path / "k.pem").write_text(key)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tmp_path / "c.pem", tmp_path / "k.pem")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    client_cert, client_key = pki.issue("console")
    try:
        said = _refused(migrated_db, bed_settings, "not-docker", "no Docker Engine answered at 127.0.0.1",
                        endpoint_url=f"tcp://127.0.0.1:{server.server_address[1]}", tls_ca=pki.ca_pem,
                        tls_cert=client_cert, tls_key=client_key)
        # What answered (a web server's 404) is not repeated: adding a host is no port scanner.
        assert "404" not in said and "HTTP" not in said, said
    finally:
        server.shutdown()
        server.server_close()


def test_an_ssh_host_pins_its_host_key_and_says_what_failed(migrated_db, bed_settings, remote):
    from tests.hostbed import ssh_keypair

    db, settings = migrated_db, bed_settings
    _, h = remote
    other_key, _ = ssh_keypair()
    _refused(db, settings, "auth", "refused the key", endpoint_url=h.ssh_url, ssh_key=other_key)
    _, wrong_public = ssh_keypair()
    _refused(db, settings, "host-key", "not the pinned", endpoint_url=h.ssh_url, ssh_key=h.ssh_key,
             ssh_host_key=wrong_public)
    with pytest.raises(hosts.HostInvalid, match="ssh needs a user"):
        hosts.add_host(db, settings, name="h", endpoint_url=f"ssh://{h.ip}", ssh_key=h.ssh_key)
    with pytest.raises(hosts.HostInvalid, match="ssh key: not a private key"):
        hosts.add_host(db, settings, name="h", endpoint_url=h.ssh_url, ssh_key="hello")

    # No host key given: nothing saved, the key the machine showed handed back to confirm.
    unconfirmed = _refused(db, settings, "host-key-unconfirmed", "shows host key SHA256:", endpoint_url=h.ssh_url,
                           ssh_key=h.ssh_key)
    assert fingerprint(h.ssh_host_key) in unconfirmed
    with pytest.raises(hosts.HostInvalid) as err:
        hosts.add_host(db, settings, name="gpu-ssh", endpoint_url=h.ssh_url, ssh_key=h.ssh_key)
    assert err.value.seen_host_key == h.ssh_host_key
    added = hosts.add_host(db, settings, name="gpu-ssh", endpoint_url=h.ssh_url, ssh_key=h.ssh_key,
                           ssh_host_key=err.value.seen_host_key)  # confirmed
    assert added.reachable and added.ssh_host_key == h.ssh_host_key
    assert _runs_only_dial_stdio(h)  # the key is installed as the README says, and Cortex works
    row = hosts.host_json(added, settings)
    assert "host key SHA256:" in row["credential"] and "OPENSSH" not in str(row)
    with db.connect() as conn:
        assert conn.execute(sa.text("SELECT ssh_key FROM host WHERE name = 'gpu-ssh'")).scalar().startswith("fernet:")

    # Later checks hold the pinned key too: a machine that now shows another key is refused.
    with db.begin() as conn:
        conn.execute(sa.text("UPDATE host SET ssh_host_key = :k WHERE id = :id"), {"k": wrong_public, "id": added.id})
    changed = hosts.check_host(db, settings, added.id)
    assert not changed.reachable and changed.problem == "host-key" and "not the pinned" in changed.last_error
    with db.begin() as conn:
        conn.execute(sa.text("UPDATE host SET ssh_host_key = :k WHERE id = :id"), {"k": h.ssh_host_key, "id": added.id})

    # The machine answers but its engine is down: ssh works, and the error says the engine is missing.
    h.stop_engine()
    try:
        checked = hosts.check_host(db, settings, added.id)
        assert not checked.reachable and checked.problem == "not-docker", checked.last_error
        assert "ssh to" in checked.last_error and "no Docker Engine answered" in checked.last_error
        # The remote's own words (its key runs only dial-stdio, which says it found no socket).
        assert "docker.sock" in checked.last_error, checked.last_error
    finally:
        h.start_engine()
    assert hosts.check_host(db, settings, added.id).reachable

    # The console's secret key changed: the saved ssh key reads back as nothing. The check says
    # so (it used to raise, and POST /api/hosts/{id}/check answered 500), and tries nothing.
    from cortex_app import secretbox
    from cortex_app.settings import load_settings
    secretbox.use(load_settings({"CORTEX_SECRET_KEY": "another-key-another-key-another-key-1"}))
    lost = hosts.check_host(db, settings, added.id)
    assert not lost.reachable and lost.problem == "secret-key", (lost.problem, lost.last_error)
    assert "its ssh key for" in lost.last_error and "remove the host and add it again" in lost.last_error


def _runs_only_dial_stdio(h: RemoteHost) -> bool:
    """Whether the host's authorized key runs `docker system dial-stdio` whatever is asked:
    a shell command over it never runs."""
    import io

    import paramiko

    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    client.connect(h.ip, username="root", pkey=paramiko.Ed25519Key.from_private_key(io.StringIO(h.ssh_key)),
                   look_for_keys=False, allow_agent=False, timeout=5)
    try:
        chan = client.get_transport().open_session(timeout=5)
        chan.settimeout(5)
        chan.exec_command("echo a-shell-ran")
        chan.shutdown_write()  # dial-stdio ends when its input does
        out = b""
        try:
            while chunk := chan.recv(4096):
                out += chunk
        except TimeoutError:
            pass
        return b"a-shell-ran" not in out
    finally:
        client.close()


def test_checks_on_demand_are_rate_limited_per_host(migrated_db, bed_settings):
    """The Check button and the check route: ten at once, or one after another within
    CHECK_AGAIN_AFTER_S, make one connection to that engine; another host is not held back."""
    from concurrent.futures import ThreadPoolExecutor

    from cortex_app.models import Host
    from cortex_app.runtime.types import EngineInfo

    asked: list[str] = []

    def engine(target, timeout):  # what engine_info would say, counted
        asked.append(target.url)
        time.sleep(0.2)
        return EngineInfo(host=target.url, reachable=True, version="27.5.1")

    with Session(migrated_db) as s:
        s.add_all([Host(name="a", endpoint="tcp://10.0.0.7:2376", tls_ca="c", tls_cert="c", tls_key="k"),
                   Host(name="b", endpoint="tcp://10.0.0.8:2376", tls_ca="c", tls_cert="c", tls_key="k")])
        s.commit()
    a, b = [h.id for h in hosts.list_hosts(migrated_db) if h.name in ("a", "b")]
    with ThreadPoolExecutor(10) as pool:
        rows = list(pool.map(lambda _: hosts.check_on_demand(migrated_db, bed_settings, a, engine), range(10)))
    assert asked == ["tcp://10.0.0.7:2376"] and all(r.reachable for r in rows)
    hosts.check_on_demand(migrated_db, bed_settings, a, engine)  # again at once: that check's answer
    hosts.check_on_demand(migrated_db, bed_settings, b, engine)  # another host: asked
    assert asked == ["tcp://10.0.0.7:2376", "tcp://10.0.0.8:2376"]
    time.sleep(hosts.CHECK_AGAIN_AFTER_S)
    hosts.check_on_demand(migrated_db, bed_settings, a, engine)
    assert asked[-1] == "tcp://10.0.0.7:2376" and len(asked) == 3


def test_a_silent_host_misses_its_deadline_and_delays_no_other(migrated_db, bed_settings, remote):
    db, settings = migrated_db, bed_settings
    tls, ssh = remote
    from cortex_app import webhooks

    webhooks.create_endpoint(db, url="http://127.0.0.1:9/hook", event_types=["host.unreachable", "host.reachable"])
    a = hosts.add_host(db, settings, name="gpu-tls", **_tls(tls))
    b = hosts.add_host(db, settings, name="gpu-ssh", endpoint_url=ssh.ssh_url, ssh_key=ssh.ssh_key,
                       ssh_host_key=ssh.ssh_host_key)
    first = hosts.check_all(db, settings, timeout=2.0)
    assert not first.late and {x.reachable for x in hosts.list_hosts(db)} == {True}

    tls.cut()  # its network goes silent: the check waits, it is not refused
    try:
        t0 = time.perf_counter()
        cut = hosts.check_all(db, settings, timeout=2.0)
        took = time.perf_counter() - t0
        print(f"pass with one silent host: {took:.2f} s; per host {cut.checked}; late {cut.late}")
        assert took < 2.0 + 1.5, took  # its deadline, plus little
        assert cut.checked[1] < 1.0 and cut.checked[b.id] < 1.5, cut.checked  # the others were not held up
        state = {x.name: x for x in hosts.list_hosts(db)}
        silent = state["gpu-tls"]
        assert not silent.reachable and silent.problem == "unreachable", silent.last_error
        assert "within 2 s" in silent.last_error, silent.last_error
        assert state["local"].reachable and state["gpu-ssh"].reachable
    finally:
        tls.restore()
    back = hosts.check_all(db, settings, timeout=2.0)
    assert not back.late and hosts.get_host(db, a.id).reachable
    with Session(db) as session:
        kinds = [(e.kind, e.subject) for e in session.exec(select(ConsoleEvent).order_by(ConsoleEvent.id)).all()]
        sent = [d.event_type for d in session.exec(select(WebhookDelivery)).all()]
    assert ("host.unreachable", "gpu-tls") in kinds and ("host.reachable", "gpu-tls") in kinds
    assert kinds.index(("host.unreachable", "gpu-tls")) < kinds.index(("host.reachable", "gpu-tls"))
    assert sent == ["host.unreachable", "host.reachable"], sent  # one each, in order


def test_hosts_over_http_and_the_scheduler_watches_them(start_console, docker_host, remote):
    """The routes the Hosts page's actions mirror, on a console started as `make up` does; its
    scheduler notices a host going silent on its own."""
    tls, ssh = remote
    c = start_console(DOCKER_HOST=docker_host, CORTEX_ADMIN_USER="admin", CORTEX_ADMIN_PASSWORD="hosts-test-pass")
    api = httpx.Client(base_url=c.url, timeout=30)
    assert api.get("/api/hosts").status_code == 401
    token = api.post("/api/session", json={"username": "admin", "password": "hosts-test-pass"}).json()["token"]
    bearer = {"Authorization": f"Bearer {token}"}
    [local] = api.get("/api/hosts", headers=bearer).json()["hosts"]
    assert local["name"] == "local" and local["endpoint"] == docker_host

    body = {"name": "gpu-tls", "endpoint": tls.tls_url, "tls_ca": tls.pki.ca_pem, "tls_cert": tls.client_cert,
            "tls_key": tls.client_key}
    assert api.post("/api/hosts", json=body).status_code == 401  # the cookie alone never writes
    bad = api.post("/api/hosts", json=body | {"endpoint": f"tcp://{tls.ip}:2399"}, headers=bearer)
    assert bad.status_code == 422 and bad.json()["problem"] == "unreachable", bad.text
    assert api.post("/api/hosts", json=body | {"color": "red"}, headers=bearer).status_code == 422
    made = api.post("/api/hosts", json=body, headers=bearer)
    assert made.status_code == 201, made.text
    host = made.json()
    assert host["state"] == "reachable" and "BEGIN" not in made.text and "tls_key" not in host

    tls.cut()
    try:
        deadline = time.monotonic() + 30  # the job runs every 10 s, each host with a 3 s deadline
        while time.monotonic() < deadline:
            rows = {h["name"]: h for h in api.get("/api/hosts", headers=bearer).json()["hosts"]}
            if rows["gpu-tls"]["state"] == "unreachable":
                break
            time.sleep(0.5)
        assert rows["gpu-tls"]["state"] == "unreachable" and rows["gpu-tls"]["problem"] == "unreachable"
        assert rows["local"]["state"] == "reachable"
    finally:
        tls.restore()
    checked = api.post(f"/api/hosts/{host['id']}/check", headers=bearer)
    assert checked.status_code == 200 and checked.json()["state"] == "reachable"
    again = api.post(f"/api/hosts/{host['id']}/check", headers=bearer)  # at once again: the same check
    assert again.status_code == 200 and again.json()["checked_at"] == checked.json()["checked_at"]
    assert api.delete("/api/hosts/1", headers=bearer).status_code == 409
    assert api.delete(f"/api/hosts/{host['id']}", headers=bearer).status_code == 204
    assert api.delete(f"/api/hosts/{host['id']}", headers=bearer).status_code == 404

    # An ssh host: the key its machine shows comes back to be confirmed; sent back, it is saved.
    ssh_body = {"name": "gpu-ssh", "endpoint": ssh.ssh_url, "ssh_key": ssh.ssh_key}
    unconfirmed = api.post("/api/hosts", json=ssh_body, headers=bearer)
    assert unconfirmed.status_code == 422 and unconfirmed.json()["problem"] == "host-key-unconfirmed", unconfirmed.text
    assert unconfirmed.json()["seen_host_key"] == ssh.ssh_host_key
    assert [h["name"] for h in api.get("/api/hosts", headers=bearer).json()["hosts"]] == ["local"]
    confirmed = api.post("/api/hosts", json=ssh_body | {"ssh_host_key": unconfirmed.json()["seen_host_key"]},
                         headers=bearer)
    assert confirmed.status_code == 201, confirmed.text
    assert api.delete(f"/api/hosts/{confirmed.json()['id']}", headers=bearer).status_code == 204
