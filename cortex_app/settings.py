"""Every environment variable Cortex reads, read once into one frozen object.

`load_settings()` validates as it reads: a bad value raises `SettingsError` whose message
names the variable to change. Nothing here touches the disk or the network.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional
from urllib.parse import urlsplit

DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"
DEFAULT_LLAMACPP_IMAGE = "ghcr.io/ggml-org/llama.cpp:server-cuda"
DEFAULT_VLLM_IMAGE = "vllm/vllm-openai:latest"
# Any image will do: the NVIDIA Container Toolkit brings nvidia-smi into a container given GPUs.
DEFAULT_GPU_SAMPLER_IMAGE = "ubuntu:24.04"
DEFAULT_INGRESS_IMAGE = "nginx:1.27-alpine"


class SettingsError(ValueError):
    """A setting has a value Cortex cannot use; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    db_url: str
    port: int
    docker_host: str
    models_dir: Path
    llamacpp_image: str
    vllm_image: str
    keep_models_on_restart: bool
    reconcile_interval_s: float = 10.0
    probe_interval_s: float = 5.0
    unhealthy_after: int = 3
    docker_events: bool = True
    public_url: str = "http://localhost:3000"  # links in webhooks point here
    metrics_public: bool = False  # /metrics without a token
    # Self-hosting (see hosting.py): the network the console shares with its models, the
    # host's path of the models dir, and the interface model ports are published on
    # (None: not published; only possible on a shared network).
    docker_network: Optional[str] = None
    models_host_dir: Optional[Path] = None
    publish_host: Optional[str] = "127.0.0.1"
    # Hardening of every model container, a console setting (never per model): no process in
    # it may gain privileges (setuid binaries), and at most this many processes/threads (0: no limit).
    model_no_new_privileges: bool = True
    model_pids_limit: int = 16384
    # Seals the secrets kept in the database (secretbox.py); None: the key file in the data dir.
    secret_key: Optional[str] = field(default=None, repr=False)
    listen: str = "0.0.0.0"  # the interface the console serves on (CORTEX_PORT's)
    # The gateway (/v1): how long a model may keep a request waiting (first answer, or the
    # next streamed chunk) before the client gets 504, and whether each request is metered.
    gateway_timeout_s: float = 600.0
    gateway_metering: bool = True
    usage_retention_days: int = 90  # gateway usage records older than this are deleted
    sampler_image: str = DEFAULT_GPU_SAMPLER_IMAGE  # what a remote host's GPU sampler runs (gpu_samplers.py)
    ingress_image: str = DEFAULT_INGRESS_IMAGE  # what a remote host's ingress runs (cortex_app/ingress)

    @property
    def allowed_origins(self) -> tuple[str, ...]:
        """The only origins whose pages may talk to the console (CORS and the websocket): its
        public URL's, and its port on the loopback names (an SSH tunnel, the host itself)."""
        own = [origin_of(self.public_url)] + [f"http://{h}:{self.port}" for h in ("localhost", "127.0.0.1", "[::1]")]
        return tuple(dict.fromkeys(own))

    @property
    def hf_cache_dir(self) -> Path:
        """Hugging Face cache shared by vLLM containers (mounted read-write)."""
        return self.data_dir / "hf-cache"

    @property
    def db_kind(self) -> str:
        """'sqlite', 'postgresql', ...: the dialect part of the URL."""
        return self.db_url.split(":", 1)[0].split("+", 1)[0]


def _port(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a port number; set {name} to 1-65535") from None
    if not 1 <= value <= 65535:
        raise SettingsError(f"{name}={value} is out of range; set {name} to 1-65535")
    return value


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{name}={raw!r} is not a boolean; set {name} to true or false")


def _number(env: Mapping[str, str], name: str, default: float, lo: float, hi: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a number; set {name} to {lo:g}-{hi:g}") from None
    if not lo <= value <= hi:
        raise SettingsError(f"{name}={raw} is out of range; set {name} to {lo:g}-{hi:g}")
    return value


def _public_url(env: Mapping[str, str], port: int) -> str:
    raw = env.get("CORTEX_PUBLIC_URL", "").strip().rstrip("/")
    if not raw:
        return f"http://localhost:{port}"
    parts = urlsplit(raw)
    try:
        parts.port
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise SettingsError(f"CORTEX_PUBLIC_URL={raw!r} is not an http(s) URL; set it to the address admins "
                            "open, e.g. http://gpu-host:3000")
    return raw


def _whole(env: Mapping[str, str], name: str, default: int, lo: int, hi: int) -> int:
    raw = env.get(name, "").strip()
    if raw and not raw.isdigit():
        raise SettingsError(f"{name}={raw!r} is not a whole number; set {name} to {lo}-{hi}")
    return int(_number(env, name, default, lo, hi))


NETWORK_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


def _network(env: Mapping[str, str]) -> Optional[str]:
    raw = env.get("CORTEX_DOCKER_NETWORK", "").strip()
    if not raw:
        return None
    if not NETWORK_NAME.match(raw) or raw in ("host", "none", "bridge", "default"):
        raise SettingsError(f"CORTEX_DOCKER_NETWORK={raw!r} cannot be the console's model network; use a name "
                            "of letters, digits, _ . - such as cortex (not host, none, bridge or default)")
    return raw


def _host_dir(env: Mapping[str, str]) -> Optional[Path]:
    raw = env.get("CORTEX_MODELS_HOST_DIR", "").strip()
    if not raw:
        return None
    if not raw.startswith("/"):
        raise SettingsError(f"CORTEX_MODELS_HOST_DIR={raw!r} is not an absolute path; set it to the models "
                            "folder's path on the Docker host, e.g. /srv/models")
    return Path(os.path.normpath(raw))


def _publish_host(env: Mapping[str, str]) -> Optional[str]:
    raw = env.get("CORTEX_PUBLISH_HOST", "").strip()
    if not raw:
        return "127.0.0.1"
    if raw.lower() == "none":
        return None
    try:
        return str(ipaddress.ip_address(raw))
    except ValueError:
        raise SettingsError(f"CORTEX_PUBLISH_HOST={raw!r} is not an IP address; use 127.0.0.1 (the default), "
                            "0.0.0.0 (every interface) or none (no host ports)") from None


def sqlite_url(data_dir: Path) -> str:
    return f"sqlite:///{data_dir / 'cortex.db'}"


def origin_of(url: str) -> str:
    """The Origin a browser sends from a page at `url`: scheme://host[:port], lower case, with
    the scheme's default port left out."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    port = parts.port
    default = {"http": 80, "https": 443}.get(parts.scheme)
    return f"{parts.scheme}://{host}" + (f":{port}" if port and port != default else "")


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if env is None else env
    data_dir = Path(env.get("CORTEX_DATA_DIR", "").strip() or "./data").expanduser().resolve()
    db_url = env.get("CORTEX_DB_URL", "").strip() or sqlite_url(data_dir)
    if "://" not in db_url:
        raise SettingsError(
            f"CORTEX_DB_URL={db_url!r} is not a database URL; use e.g. "
            "sqlite:////path/cortex.db or postgresql+psycopg://user:pass@host/db"
        )
    if db_url.startswith(("postgresql://", "postgres://")):
        # psycopg 3 is the driver we ship; SQLAlchemy's bare postgresql:// means psycopg2.
        db_url = "postgresql+psycopg://" + db_url.split("://", 1)[1]
    models_dir = Path(env.get("CORTEX_MODELS_DIR", "").strip() or data_dir / "models").expanduser().resolve()
    port = _port(env, "CORTEX_PORT", 3000)
    public_url = _public_url(env, port)
    return Settings(
        data_dir=data_dir,
        db_url=db_url,
        port=port,
        docker_host=env.get("DOCKER_HOST", "").strip() or DEFAULT_DOCKER_HOST,
        models_dir=models_dir,
        llamacpp_image=env.get("CORTEX_LLAMACPP_IMAGE", "").strip() or DEFAULT_LLAMACPP_IMAGE,
        vllm_image=env.get("CORTEX_VLLM_IMAGE", "").strip() or DEFAULT_VLLM_IMAGE,
        sampler_image=env.get("CORTEX_GPU_SAMPLER_IMAGE", "").strip() or DEFAULT_GPU_SAMPLER_IMAGE,
        ingress_image=env.get("CORTEX_INGRESS_IMAGE", "").strip() or DEFAULT_INGRESS_IMAGE,
        keep_models_on_restart=_bool(env, "CORTEX_KEEP_MODELS_ON_RESTART", False),
        reconcile_interval_s=_number(env, "CORTEX_RECONCILE_INTERVAL", 10.0, 0.2, 3600),
        probe_interval_s=_number(env, "CORTEX_PROBE_INTERVAL", 5.0, 0.2, 3600),
        unhealthy_after=int(_number(env, "CORTEX_UNHEALTHY_AFTER", 3, 1, 100)),
        docker_events=_bool(env, "CORTEX_DOCKER_EVENTS", True),
        public_url=public_url,
        metrics_public=_bool(env, "CORTEX_METRICS_PUBLIC", False),
        docker_network=_network(env),
        models_host_dir=_host_dir(env),
        publish_host=_publish_host(env),
        model_no_new_privileges=_bool(env, "CORTEX_MODEL_NO_NEW_PRIVILEGES", True),
        model_pids_limit=_whole(env, "CORTEX_MODEL_PIDS_LIMIT", 16384, 0, 4_194_304),
        secret_key=_secret_key(env),
        listen=_listen(env),
        gateway_timeout_s=_number(env, "CORTEX_GATEWAY_TIMEOUT", 600.0, 1, 86400),
        gateway_metering=_bool(env, "CORTEX_GATEWAY_METERING", True),
        usage_retention_days=_whole(env, "CORTEX_USAGE_RETENTION_DAYS", 90, 1, 3650),
    )


def _listen(env: Mapping[str, str]) -> str:
    raw = env.get("CORTEX_LISTEN", "").strip()
    if not raw:
        return "0.0.0.0"
    try:
        address = ipaddress.ip_address(raw)
    except ValueError:
        raise SettingsError(f"CORTEX_LISTEN={raw!r} is not an IP address; use 0.0.0.0 (every interface, the "
                            "default), 127.0.0.1 (this host only) or one of this host's addresses") from None
    if address.version != 4:
        raise SettingsError(f"CORTEX_LISTEN={raw!r}: use an IPv4 address (0.0.0.0 for every interface)")
    return str(address)


MIN_SECRET_KEY = 32


def _secret_key(env: Mapping[str, str]) -> Optional[str]:
    value = env.get("CORTEX_SECRET_KEY", "").strip()
    if value and len(value) < MIN_SECRET_KEY:
        raise SettingsError(f"CORTEX_SECRET_KEY is too short ({len(value)} characters): use at least "
                            f"{MIN_SECRET_KEY}, e.g. the output of `openssl rand -base64 32`")
    return value or None


def redact_url(url: str) -> str:
    """The URL with its password replaced, for messages and logs."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    creds, _, host = rest.rpartition("@")
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in creds else url
