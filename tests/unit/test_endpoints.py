"""Endpoints as an admin types them: normalized, or refused with what is wrong (no network)."""

import pytest

from cortex_app.runtime.endpoints import EndpointInvalid, fingerprint, normalize_url, parse_host_key

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHCQs1qvTnVabGGy9hvyjIFHvcn3fNqn6Iak5jnxS4Mb"


@pytest.mark.parametrize("raw, stored", [
    ("unix:///var/run/docker.sock", "unix:///var/run/docker.sock"),
    ("tcp://10.0.0.12", "tcp://10.0.0.12:2376"),
    ("tcp://gpu-2.lan:2376/", "tcp://gpu-2.lan:2376"),
    (" ssh://cortex@10.0.0.12 ", "ssh://cortex@10.0.0.12"),
    ("ssh://cortex@10.0.0.12:22", "ssh://cortex@10.0.0.12"),
    ("ssh://cortex@10.0.0.12:2222", "ssh://cortex@10.0.0.12:2222"),
    ("tcp://[fd00::12]:2376", "tcp://[fd00::12]:2376"),
])
def test_endpoints_are_stored_in_one_form(raw, stored):
    assert normalize_url(raw) == stored


@pytest.mark.parametrize("raw, words", [
    ("", "required"),
    ("https://10.0.0.12:2376", "Docker's own form"),
    ("ftp://x", "ftp scheme; use unix://"),
    ("10.0.0.12:2376", "scheme"),
    ("unix://relative/docker.sock", "unix:///absolute/path"),
    ("tcp://user@10.0.0.12", "takes no user"),
    ("tcp://10.0.0.12:2376/v1.41", "no path"),
    ("tcp://bad_host!:2376", "not a host name"),
    ("ssh://10.0.0.12", "ssh needs a user"),
    ("ssh://cortex:pw@10.0.0.12", "no password"),
    ("tcp://10.0.0.12:99999", "not a URL"),
])
def test_bad_endpoints_say_what_is_wrong(raw, words):
    with pytest.raises(EndpointInvalid, match=words):
        normalize_url(raw)


@pytest.mark.parametrize("text, pinned", [
    ("", ""),
    (KEY, KEY),
    (f"10.0.0.12 {KEY}", KEY),  # as ssh-keyscan prints it
    (f"[10.0.0.12]:2222 {KEY} root@gpu-2", KEY),
])
def test_host_keys_are_read_as_ssh_keyscan_prints_them(text, pinned):
    assert parse_host_key(text) == pinned


@pytest.mark.parametrize("text", ["hello", "ssh-ed25519 !!!notbase64", "ssh-rsa " + KEY.split()[1]])
def test_a_host_key_that_is_no_key_is_refused(text):
    with pytest.raises(EndpointInvalid, match="ssh host key"):
        parse_host_key(text)


def test_fingerprints_read_as_ssh_shows_them():
    fp = fingerprint(KEY)
    assert fp.startswith("SHA256:") and len(fp) == 7 + 43 and not fp.endswith("=")
    assert fingerprint("") == ""


@pytest.mark.parametrize("docker_host", ["ssh://me@127.0.0.1:1", "tcp://127.0.0.1:1", "unix:///nonexistent/docker.sock"])
def test_the_consoles_own_docker_host_is_reached_as_the_sdk_reaches_it(docker_host):
    """A DOCKER_HOST string (not a Hosts page endpoint) needs no credentials of Cortex's: an
    ssh:// one uses ~/.ssh as the SDK does. Nothing answers here: said, never raised."""
    from cortex_app.runtime.docker import engine_info

    info = engine_info(docker_host, 1)
    assert not info.reachable and info.problem == "unreachable" and "DOCKER_HOST" in info.error


def test_a_tls_endpoint_without_its_key_is_never_reached_in_the_clear():
    from cortex_app.runtime.docker import engine_info
    from cortex_app.runtime.endpoints import Endpoint

    info = engine_info(Endpoint("tcp://127.0.0.1:1"), 1)
    assert not info.reachable and info.problem == "tls" and "no client certificate" in info.error
