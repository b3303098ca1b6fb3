"""What a remote host's ingress runs: stock nginx, with this configuration. Decisions only.

The ingress is the one door to that host's models: it listens (TLS 1.3 only) on the one port
its host publishes, asks every client for a certificate and accepts only one issued by the
console's CA (pki.py), and passes `/m/<container short id>/<port>/<path>` to that container on
the host-local network the models share with it, where nothing publishes a port. Anything else
is 404; a client without the certificate gets nothing but nginx's 400.

Streams pass through as they come (no buffering either way), and the console's own deadlines
bound every request, so nginx's are long. nginx runs as nobody with no capability: its
temporary files go to a tmpfs at /tmp, and it logs errors only (no access log: the console
keeps usage), to its container's output.
"""

from __future__ import annotations

import hashlib

CONTAINER_PORT = 8443
FOLDER = "/etc/cortex-ingress"  # the ingress's files: put there before it starts
COMMAND = ["nginx", "-e", "stderr", "-c", f"{FOLDER}/nginx.conf", "-g", "daemon off;"]
DOCKER_DNS = "127.0.0.11"  # the engine's resolver on a user-defined network
PATH_PREFIX = "/m"


def network_name(instance: str | None) -> str:
    """The host-local Docker network of this install's models and ingress on another host."""
    return f"cortex-models-{(instance or 'default')[:12]}"


def container_name(instance: str | None) -> str:
    return f"cortex-ingress-{(instance or 'default')[:12]}"


def model_path(container_id: str, port: int) -> str:
    """Where, on its host's ingress, a model's HTTP server is: its base URL's path."""
    return f"{PATH_PREFIX}/{container_id[:12]}/{port}"


def config() -> str:
    return f"""worker_processes 2;
pid /tmp/nginx.pid;
error_log stderr warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    server_tokens off;
    client_body_temp_path /tmp/client_body;
    proxy_temp_path /tmp/proxy;
    fastcgi_temp_path /tmp/fastcgi;
    uwsgi_temp_path /tmp/uwsgi;
    scgi_temp_path /tmp/scgi;
    client_max_body_size 0;
    client_body_timeout 120s;
    proxy_buffering off;
    proxy_request_buffering off;
    proxy_http_version 1.1;
    proxy_connect_timeout 5s;
    proxy_read_timeout 3600s;
    proxy_send_timeout 3600s;
    send_timeout 3600s;
    resolver {DOCKER_DNS} valid=5s ipv6=off;
    resolver_timeout 2s;
    server {{
        listen {CONTAINER_PORT} ssl;
        ssl_protocols TLSv1.3;
        ssl_certificate {FOLDER}/server.pem;
        ssl_certificate_key {FOLDER}/server.key;
        ssl_client_certificate {FOLDER}/ca.pem;
        ssl_verify_client on;
        ssl_session_cache shared:tls:4m;
        ssl_session_timeout 1h;
        keepalive_requests 100000;
        keepalive_timeout 120s;
        location ~ "^{PATH_PREFIX}/(?<model>[0-9a-f]{{12}})/(?<port>[0-9]{{2,5}})(?<rest>/.*)$" {{
            proxy_pass http://$model:$port$rest$is_args$args;
            proxy_set_header Host $model:$port;
            proxy_set_header Connection "";
        }}
        location / {{
            return 404;
        }}
    }}
}}
"""


def config_hash(ca_fingerprint: str, address: str, image: str) -> str:
    """What an ingress was made with: one that differs is made again."""
    return hashlib.sha256("\n".join([config(), ca_fingerprint, address, image]).encode()).hexdigest()[:16]


def files(ca_pem: str, server_cert: str, server_key: str) -> dict[str, tuple[bytes, int]]:
    return {"nginx.conf": (config().encode(), 0o400), "ca.pem": (ca_pem.encode(), 0o400),
            "server.pem": (server_cert.encode(), 0o400), "server.key": (server_key.encode(), 0o400)}
