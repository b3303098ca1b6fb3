"""A remote host whose saved credentials this console cannot read (sealed with another secret
key: they read back as None) is reported so by every connection, which tries nothing."""
from __future__ import annotations

import socket

import pytest

from cortex_app import hosts
from cortex_app.models import Host
from cortex_app.runtime.docker import engine_info
from cortex_app.settings import load_settings


def _listener() -> socket.socket:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    s.settimeout(0.3)
    return s


@pytest.mark.parametrize("row, words", [
    (dict(endpoint="ssh://cortex@127.0.0.1:{port}", ssh_key=None), "its ssh key for"),
    (dict(endpoint="tcp://127.0.0.1:{port}", tls_ca="ca", tls_cert="cert", tls_key=None), "its client key for"),
    (dict(endpoint="tcp://127.0.0.1:{port}", tls_ca=None, tls_cert=None, tls_key=None),
     "its CA certificate, client certificate, client key for"),
])
def test_unreadable_credentials_are_named_and_nothing_is_tried(row, words):
    where = _listener()  # a connection attempt would show up here
    try:
        port = where.getsockname()[1]
        host = Host(id=7, name="gpu", **{**row, "endpoint": row["endpoint"].format(port=port)})
        target = hosts.target_of(host, load_settings({}))
        info = engine_info(target, 1)
        assert (info.reachable, info.problem) == (False, "secret-key"), info
        assert words in info.error and "cannot be read with this console's secret key" in info.error, info.error
        with pytest.raises(socket.timeout):
            where.accept()
    finally:
        where.close()


def test_credentials_that_read_back_are_not_called_unreadable():
    ssh = hosts.target_of(Host(id=2, name="a", endpoint="ssh://u@h", ssh_key="KEY"), load_settings({}))
    tls = hosts.target_of(Host(id=3, name="b", endpoint="tcp://h:2376", tls_ca="c", tls_cert="c", tls_key="k"),
                          load_settings({}))
    assert ssh.unreadable == "" and tls.unreadable == ""
    assert hosts.target_of(Host(id=1, name="local"), load_settings({})) == load_settings({}).docker_host
