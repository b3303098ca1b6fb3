"""All tables and enums: model configurations, their runtime state, and state-change events.

The schema reaches a database only through Alembic migrations (alembic/versions); a test
checks that these classes and the migrated schema agree.
"""

from __future__ import annotations

import enum
from datetime import datetime, timezone
from typing import Any, Optional

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from cortex_app.secretbox import Sealed, SealedText


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UTCDateTime(sa.types.TypeDecorator):
    """A timezone-aware UTC datetime on every backend.

    SQLite keeps no zone, so values come back naive; they were written as UTC, so they are
    tagged UTC on the way out. Naive values are refused on the way in.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Optional[datetime], dialect) -> Optional[datetime]:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: Cortex stores timezone-aware UTC times only")
        return value.astimezone(timezone.utc)

    def process_result_value(self, value: Optional[datetime], dialect) -> Optional[datetime]:
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


class Engine(str, enum.Enum):
    LLAMACPP = "llamacpp"
    VLLM = "vllm"


class Device(str, enum.Enum):
    CPU = "cpu"
    CUDA = "cuda"


class ModelState(str, enum.Enum):
    STOPPED = "stopped"
    STARTING = "starting"
    LOADING = "loading"
    RUNNING = "running"
    STOPPING = "stopping"
    FAILED = "failed"


def _enum_column(enum_cls: type[enum.Enum], default: enum.Enum | None = None, nullable: bool = False) -> sa.Column:
    # Stored as plain strings (no native ENUM type): adding a value needs no type migration.
    return sa.Column(
        sa.Enum(enum_cls, native_enum=False, length=16, values_callable=lambda e: [m.value for m in e],
                validate_strings=True),
        nullable=nullable,
        default=default,
    )


def _time(nullable: bool = True, **kw: Any) -> Any:
    return Field(default=None, sa_column=sa.Column(UTCDateTime(), nullable=nullable, **kw))


class Health(str, enum.Enum):
    UNKNOWN = "unknown"
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"


class EventKind(str, enum.Enum):
    STATE = "state"          # the model's state changed
    HEALTH = "health"        # healthy <-> unhealthy, state unchanged
    CONTAINER = "container"  # the reconciler removed a container nobody asked for
    HOST = "host"            # its host stopped answering, or answers again: state kept, health unknown


class Model(SQLModel, table=True):
    """One model an admin defined: its configuration (intent) and its runtime state."""

    __tablename__ = "model"
    # SQLite would give a new model the id of the last one deleted (max + 1), and with it that
    # model's history, its containers' label and its place in webhook filters: ids are never
    # reused. (PostgreSQL's sequences never reuse them anyway.)
    # Two models never hold one port of one host, even when two Starts race.
    __table_args__ = (sa.UniqueConstraint("host_id", "host_port", name="uq_model_host_port"),
                      {"sqlite_autoincrement": True})

    id: Optional[int] = Field(default=None, primary_key=True)
    name: str = Field(sa_column=sa.Column(sa.String(64), nullable=False, unique=True))
    # The Docker Engine it runs on (hosts.py; host 1 is the console's own). It changes only
    # while the model is stopped: by an admin, or at Start when `auto_host` lets placement pick.
    host_id: int = Field(default=1, sa_column=sa.Column(sa.Integer, sa.ForeignKey("host.id", name="fk_model_host_id"),
                                                        nullable=False, index=True, server_default="1"))
    auto_host: bool = Field(default=False, sa_column=sa.Column(sa.Boolean, nullable=False, server_default=sa.false()))
    served_name: str = Field(sa_column=sa.Column(sa.String(128), nullable=False, unique=True))
    # A public name several models may share (replicas): the gateway spreads requests for it
    # across the healthy ones. Gateway-only: the engine never sees it.
    alias: Optional[str] = Field(default=None, sa_column=sa.Column(sa.String(128), nullable=True, index=True))
    engine: Engine = Field(sa_column=_enum_column(Engine))
    image: str = Field(sa_column=sa.Column(sa.String(255), nullable=False))
    # llama.cpp: GGUF path relative to the models dir; vLLM: HF repo id or a folder under it.
    source: str = Field(sa_column=sa.Column(sa.String(512), nullable=False))
    device: Device = Field(default=Device.CPU, sa_column=_enum_column(Device, Device.CPU))
    gpu_ids: Optional[list[int]] = Field(default=None, sa_column=sa.Column(sa.JSON, nullable=True))  # None = all

    # llama.cpp options
    context_size: Optional[int] = None
    gpu_layers: Optional[int] = None
    parallel_slots: Optional[int] = None
    threads: Optional[int] = None
    flash_attn: Optional[bool] = None
    cache_type_k: Optional[str] = Field(default=None, max_length=16)
    cache_type_v: Optional[str] = Field(default=None, max_length=16)
    embeddings: bool = False

    # vLLM options
    tensor_parallel_size: Optional[int] = None
    gpu_memory_utilization: Optional[float] = None
    dtype: Optional[str] = Field(default=None, max_length=16)
    quantization: Optional[str] = Field(default=None, max_length=32)
    max_model_len: Optional[int] = None
    max_num_seqs: Optional[int] = None
    enforce_eager: bool = False
    trust_remote_code: bool = False
    enable_prefix_caching: Optional[bool] = None

    extra_args: list[str] = Field(default_factory=list, sa_column=sa.Column(sa.JSON, nullable=False))
    extra_env: dict[str, str] = Field(default_factory=dict, sa_column=sa.Column(sa.JSON, nullable=False))
    # What the gateway adds to a request that does not set it (temperature, max_tokens, ...).
    request_defaults: dict[str, Any] = Field(default_factory=dict, sa_column=sa.Column(sa.JSON, nullable=False))
    # A secret: sealed in the database (secretbox.py); repr=False keeps it out of reprs and so
    # out of logs; the UI shows mask_secret().
    hf_token: Optional[str] = Field(default=None, sa_column=sa.Column(Sealed("a model's HF token"), nullable=True),
                                    repr=False)
    startup_timeout_s: int = 600
    notes: str = ""

    # runtime
    state: ModelState = Field(default=ModelState.STOPPED, sa_column=_enum_column(ModelState, ModelState.STOPPED))
    state_reason: str = ""
    container_id: Optional[str] = Field(default=None, max_length=80)
    host_port: Optional[int] = None  # on its host; unique per host (see __table_args__)
    spec_hash: Optional[str] = Field(default=None, max_length=64)
    started_at: Optional[datetime] = _time()
    ready_at: Optional[datetime] = _time()
    stopped_at: Optional[datetime] = _time()
    load_seconds: Optional[float] = None  # container start -> first healthy answer, last start
    # Memory in MiB (GPU memory for a model on GPUs, else the container's): the estimate the last
    # start was made with, and the most the model held in that run, side by side.
    memory_estimate_mib: Optional[float] = None
    memory_used_mib: Optional[float] = None
    state_changed_at: Optional[datetime] = _time()  # when `state` last changed: finds stuck rows

    # health, written by the probes (reconcile/probes.py)
    health: Health = Field(default=Health.UNKNOWN, sa_column=_enum_column(Health, Health.UNKNOWN))
    last_probe_at: Optional[datetime] = _time()
    probe_latency_ms: Optional[float] = None
    consecutive_failures: int = 0
    # The last probes, oldest first: [[unix time, latency ms or null], ...], bounded.
    probe_history: list = Field(default_factory=list, sa_column=sa.Column(sa.JSON, nullable=False))

    # per-model opt-in policies, applied by the reconciler through the normal start path
    start_on_boot: bool = False
    restart_on_failure: bool = False
    restart_max_attempts: int = 3
    restart_attempts: int = 0
    next_restart_at: Optional[datetime] = _time()

    created_at: datetime = Field(default_factory=utcnow, sa_column=sa.Column(UTCDateTime(), nullable=False))
    updated_at: datetime = Field(
        default_factory=utcnow, sa_column=sa.Column(UTCDateTime(), nullable=False, onupdate=utcnow)
    )


class ModelEvent(SQLModel, table=True):
    """One state change of one model, with why and who. Kept after the model is deleted."""

    __tablename__ = "model_event"

    id: Optional[int] = Field(default=None, primary_key=True)
    model_id: int = Field(sa_column=sa.Column(sa.Integer, nullable=False, index=True))
    model_name: str = Field(sa_column=sa.Column(sa.String(64), nullable=False))
    from_state: Optional[ModelState] = Field(default=None, sa_column=_enum_column(ModelState, nullable=True))
    to_state: ModelState = Field(sa_column=_enum_column(ModelState))
    kind: EventKind = Field(default=EventKind.STATE, sa_column=_enum_column(EventKind, EventKind.STATE))
    reason: str = ""
    actor: str = Field(max_length=128)  # "admin:<user>", "token:<name>", "reconciler", "console"
    # The container's last log lines when it failed: they outlive the container.
    log_tail: Optional[str] = Field(default=None, sa_column=sa.Column(sa.Text, nullable=True))
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=sa.Column(UTCDateTime(), nullable=False, index=True)
    )


class ConsoleEvent(SQLModel, table=True):
    """The console's own log of what it did or found outside any model's history: containers
    removed that no model owned, an older install's containers removed or left alone, jobs
    that began failing and recovered. The System page shows the latest."""

    __tablename__ = "console_event"

    id: Optional[int] = Field(default=None, primary_key=True)
    kind: str = Field(max_length=32)  # container.removed | container.left-alone | job.failing | job.recovered
    subject: str = Field(max_length=255)  # a container's name, a job's name
    message: str = Field(sa_column=sa.Column(sa.Text, nullable=False))
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=sa.Column(UTCDateTime(), nullable=False, index=True)
    )


class LeaderLease(SQLModel, table=True):
    """Who runs the reconciler when several console processes share a database (SQLite and
    any backend without advisory locks): the holder renews `expires_at`; another process
    takes over once it has passed."""

    __tablename__ = "leader_lease"

    name: str = Field(sa_column=sa.Column(sa.String(64), primary_key=True))
    holder: str = Field(max_length=128)
    expires_at: datetime = Field(sa_column=sa.Column(UTCDateTime(), nullable=False))


class AdminUser(SQLModel, table=True):
    """An admin who may sign in. Only the argon2 hash of the password is stored."""

    __tablename__ = "admin_user"

    id: Optional[int] = Field(default=None, primary_key=True)
    username: str = Field(sa_column=sa.Column(sa.String(64), nullable=False, unique=True))
    password_hash: str = Field(max_length=255, repr=False)
    created_at: datetime = Field(default_factory=utcnow, sa_column=sa.Column(UTCDateTime(), nullable=False))
    last_login_at: Optional[datetime] = _time()


class SignInThrottle(SQLModel, table=True):
    """Sign-in attempts per key (an account from one address, or one address): throttle.py.
    The key is a SHA-256, never the username or the address in clear."""

    __tablename__ = "sign_in_throttle"

    key: str = Field(sa_column=sa.Column(sa.String(64), primary_key=True))
    attempts: int = Field(default=0, sa_column=sa.Column(sa.Integer, nullable=False))
    locked_until: Optional[datetime] = _time()
    last_attempt_at: datetime = Field(default_factory=utcnow, sa_column=sa.Column(UTCDateTime(), nullable=False))


class SetupCode(SQLModel, table=True):
    """The one-time code that creating the first admin needs (printed at start while no admin
    exists). Only its SHA-256 is stored; creating the admin deletes it."""

    __tablename__ = "setup_code"

    code_hash: str = Field(sa_column=sa.Column(sa.String(64), primary_key=True))
    created_at: datetime = Field(default_factory=utcnow, sa_column=sa.Column(UTCDateTime(), nullable=False))


class AdminSession(SQLModel, table=True):
    """A signed-in browser. The cookie holds a random token; only its SHA-256 is stored, so a
    database leak gives no usable session. Sign-out deletes the row.

    A sign-in on the page first makes a session waiting to be handed over (`handoff_hash`, the
    SHA-256 of a one-time code, valid for a minute; its token was never given out). The page
    posts the code to /api/session/adopt, which gives the row a new token, sets that as the
    HttpOnly cookie, and clears the code: the session token never passes through the page."""

    __tablename__ = "admin_session"

    token_hash: str = Field(sa_column=sa.Column(sa.String(64), primary_key=True))
    user_id: int = Field(sa_column=sa.Column(sa.Integer, sa.ForeignKey("admin_user.id", ondelete="CASCADE"),
                                             nullable=False, index=True))
    created_at: datetime = Field(default_factory=utcnow, sa_column=sa.Column(UTCDateTime(), nullable=False))
    expires_at: datetime = Field(sa_column=sa.Column(UTCDateTime(), nullable=False))
    handoff_hash: Optional[str] = Field(default=None, sa_column=sa.Column(sa.String(64), nullable=True, unique=True))


class WebhookEndpoint(SQLModel, table=True):
    """Where to tell other systems about events. The secret signs every delivery (Standard
    Webhooks); it is shown once when made or rotated, never again."""

    __tablename__ = "webhook_endpoint"

    id: Optional[int] = Field(default=None, primary_key=True)
    url: str = Field(sa_column=sa.Column(sa.String(2048), nullable=False))
    secret: Optional[str] = Field(sa_column=sa.Column(Sealed("a webhook signing secret"), nullable=False),
                                  repr=False)  # None: sealed with another key (secretbox.py)
    event_types: list[str] = Field(default_factory=list, sa_column=sa.Column(sa.JSON, nullable=False))
    model_ids: Optional[list[int]] = Field(default=None, sa_column=sa.Column(sa.JSON, nullable=True))  # None = all
    payload_format: str = Field(default="standard", max_length=16)  # standard | slack
    enabled: bool = True
    created_at: datetime = Field(default_factory=utcnow, sa_column=sa.Column(UTCDateTime(), nullable=False))


class WebhookDelivery(SQLModel, table=True):
    """The outbox: one event for one endpoint, written in the transaction that caused it."""

    __tablename__ = "webhook_delivery"

    id: Optional[int] = Field(default=None, primary_key=True)
    endpoint_id: int = Field(sa_column=sa.Column(sa.Integer, sa.ForeignKey("webhook_endpoint.id",
                                                                            ondelete="CASCADE"),
                                                 nullable=False, index=True))
    message_id: str = Field(max_length=64)  # webhook-id: the same on every retry, so receivers dedupe
    event_type: str = Field(max_length=64)
    model_id: Optional[int] = None
    payload: dict = Field(default_factory=dict, sa_column=sa.Column(sa.JSON, nullable=False))
    status: str = Field(default="pending", max_length=16)  # pending | delivered | failed (gave up)
    attempts: int = 0
    next_attempt_at: datetime = Field(default_factory=utcnow, sa_column=sa.Column(UTCDateTime(), nullable=False,
                                                                                  index=True))
    last_status_code: Optional[int] = None
    last_error: Optional[str] = Field(default=None, max_length=500)
    last_latency_ms: Optional[float] = None
    created_at: datetime = Field(default_factory=utcnow, sa_column=sa.Column(UTCDateTime(), nullable=False))
    delivered_at: Optional[datetime] = _time()


class WebhookAttempt(SQLModel, table=True):
    """Every delivery attempt, kept for the delivery log."""

    __tablename__ = "webhook_attempt"

    id: Optional[int] = Field(default=None, primary_key=True)
    delivery_id: int = Field(sa_column=sa.Column(sa.Integer, sa.ForeignKey("webhook_delivery.id",
                                                                            ondelete="CASCADE"),
                                                 nullable=False, index=True))
    at: datetime = Field(default_factory=utcnow, sa_column=sa.Column(UTCDateTime(), nullable=False))
    status_code: Optional[int] = None
    latency_ms: Optional[float] = None
    error: Optional[str] = Field(default=None, max_length=500)


class TokenScope(str, enum.Enum):
    """What an API token may do over HTTP; each scope includes the ones before it."""

    READ = "read"  # GET routes, /metrics
    OPERATE = "operate"  # also start, stop, apply
    ADMIN = "admin"  # also create, edit, delete: all an admin can do over HTTP

    def allows(self, needed: "TokenScope") -> bool:
        order = list(TokenScope)
        return order.index(self) >= order.index(needed)


class ApiToken(SQLModel, table=True):
    """A token for scripts and monitoring; only its SHA-256 is kept. Revoked tokens keep their
    row (the list shows when), and never work again."""

    __tablename__ = "api_token"

    id: Optional[int] = Field(default=None, primary_key=True)
    name: str = Field(max_length=64)
    token_hash: str = Field(sa_column=sa.Column(sa.String(64), nullable=False, unique=True))
    scope: TokenScope = Field(default=TokenScope.READ, sa_column=_enum_column(TokenScope, TokenScope.READ))
    created_at: datetime = Field(default_factory=utcnow, sa_column=sa.Column(UTCDateTime(), nullable=False))
    expires_at: Optional[datetime] = _time()
    revoked_at: Optional[datetime] = _time()
    last_used_at: Optional[datetime] = _time()


class Installation(SQLModel, table=True):
    """This install's identity (one row, made by the migration). Every container the console
    creates carries it as a label, and the console only ever sees containers with its own:
    two installs (or a dev console and the tests) on one Docker Engine never touch each
    other's models. Console processes sharing a database share the id."""

    __tablename__ = "installation"

    id: str = Field(sa_column=sa.Column(sa.String(32), primary_key=True))
    created_at: datetime = Field(default_factory=utcnow, sa_column=sa.Column(UTCDateTime(), nullable=False))
    # The CA remote hosts' ingresses trust (cortex_app/ingress): made at first need; its key is
    # a secret, sealed (None when it reads back empty: sealed with another secret key).
    ingress_ca_cert: Optional[str] = Field(default=None, sa_column=sa.Column(sa.Text(), nullable=True))
    ingress_ca_key: Optional[str] = Field(default=None, sa_column=sa.Column(
        SealedText("the ingress CA's key"), nullable=True), repr=False)


class InferenceKey(SQLModel, table=True):
    """A key for the OpenAI-compatible gateway (/v1 only; never accepted by /api). Only the
    key's SHA-256 is kept, found by its lookup id (the characters after `sk-cortex-`, before
    the secret). Revoked keys keep their row, as their usage does."""

    __tablename__ = "inference_key"

    id: Optional[int] = Field(default=None, primary_key=True)
    name: str = Field(max_length=64)
    lookup: str = Field(sa_column=sa.Column(sa.String(16), nullable=False, unique=True))
    key_hash: str = Field(sa_column=sa.Column(sa.String(64), nullable=False))
    models: Optional[list[str]] = Field(default=None, sa_column=sa.Column(sa.JSON, nullable=True))  # None = all
    rpm_limit: Optional[int] = None  # requests per minute; None = no limit
    created_at: datetime = Field(default_factory=utcnow, sa_column=sa.Column(UTCDateTime(), nullable=False))
    expires_at: Optional[datetime] = _time()
    revoked_at: Optional[datetime] = _time()


class UsageRecord(SQLModel, table=True):
    """One request through the gateway: who, which model, the tokens the engine reported, how
    long it took. Written in batches off the request path."""

    __tablename__ = "usage_record"
    __table_args__ = (sa.Index("ix_usage_record_at", "at"),)

    id: Optional[int] = Field(default=None, primary_key=True)
    at: datetime = Field(sa_column=sa.Column(UTCDateTime(), nullable=False))
    key_id: Optional[int] = None
    key_name: str = Field(max_length=64)
    model_name: str = Field(max_length=128)  # the served name the client asked for
    endpoint: str = Field(max_length=32)  # chat | completions | embeddings
    stream: bool = False
    status: int = 200
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: float = 0.0
    ttft_ms: Optional[float] = None  # streamed requests: until the first content chunk


class UsageHour(SQLModel, table=True):
    """The usage records summed per hour, model and key name, in the same transaction that
    writes them: what the Usage page reads (a month is 720 rows per model and key, however
    busy the gateway). The CSV export reads the records themselves."""

    __tablename__ = "usage_hour"
    __table_args__ = (sa.UniqueConstraint("hour", "model_name", "key_name", name="uq_usage_hour"),)

    id: Optional[int] = Field(default=None, primary_key=True)
    hour: datetime = Field(sa_column=sa.Column(UTCDateTime(), nullable=False))  # the hour's start, UTC
    model_name: str = Field(max_length=128)
    key_name: str = Field(max_length=64)
    requests: int = 0
    errors: int = 0  # answered 400 or more
    prompt_tokens: int = Field(default=0, sa_column=sa.Column(sa.BigInteger(), nullable=False))
    completion_tokens: int = Field(default=0, sa_column=sa.Column(sa.BigInteger(), nullable=False))
    latency_ms_sum: float = 0.0


class Host(SQLModel, table=True):
    """A Docker Engine models may run on. Host 1 is the console's own DOCKER_HOST (endpoint
    None), made by the migration, so a single-host install has one host and nothing to set.
    Others are added on the Hosts page: tcp:// with TLS client certificates, or ssh://. Their
    credentials are sealed (secretbox.py) and never shown again; an ssh host key is public and
    pinned. The state columns are what the last connection check found."""

    __tablename__ = "host"

    id: Optional[int] = Field(default=None, primary_key=True)
    name: str = Field(sa_column=sa.Column(sa.String(64), nullable=False, unique=True))
    endpoint: Optional[str] = Field(default=None, max_length=512)  # None: the console's DOCKER_HOST
    address: Optional[str] = Field(default=None, max_length=255)  # where its models are reached
    # Folders on that machine that its model containers mount (None: the console's own paths,
    # the layout of host 1).
    models_dir: Optional[str] = Field(default=None, max_length=512)
    hf_cache_dir: Optional[str] = Field(default=None, max_length=512)
    tls_ca: Optional[str] = Field(default=None, sa_column=sa.Column(SealedText("a host's CA certificate"),
                                                                    nullable=True), repr=False)
    tls_cert: Optional[str] = Field(default=None, sa_column=sa.Column(SealedText("a host's client certificate"),
                                                                      nullable=True), repr=False)
    tls_key: Optional[str] = Field(default=None, sa_column=sa.Column(SealedText("a host's client key"),
                                                                     nullable=True), repr=False)
    ssh_key: Optional[str] = Field(default=None, sa_column=sa.Column(SealedText("a host's ssh key"),
                                                                    nullable=True), repr=False)
    ssh_host_key: Optional[str] = Field(default=None, max_length=1024)  # "type base64", pinned
    reachable: Optional[bool] = None  # None: not checked yet
    engine_version: Optional[str] = Field(default=None, max_length=64)
    problem: Optional[str] = Field(default=None, max_length=16)  # unreachable | tls | auth | host-key | not-docker
    last_error: Optional[str] = Field(default=None, max_length=500)
    gpus: list[dict[str, Any]] = Field(default_factory=list, sa_column=sa.Column(sa.JSON, nullable=False))
    checked_at: Optional[datetime] = _time()
    last_seen_at: Optional[datetime] = _time()
    created_at: datetime = Field(default_factory=utcnow, sa_column=sa.Column(UTCDateTime(), nullable=False))
