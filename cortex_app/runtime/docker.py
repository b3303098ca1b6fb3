"""The one module that imports `docker`: Cortex's whole conversation with the Docker Engine.

It takes ContainerSpecs, returns plain dataclasses and raises `DockerRuntimeError`
subclasses with messages an admin can act on. Every call here blocks; async code runs it
with `asyncio.to_thread`.
"""

from __future__ import annotations

import io
import socket
import tarfile
import threading
from typing import Callable, Iterable, Iterator, Optional, Union

import docker
import docker.errors
import docker.types
import requests.exceptions

from cortex_app.engines.spec import (LABEL_INGRESS, LABEL_INSTANCE, LABEL_MANAGED, LABEL_MODEL_ID, LABEL_SAMPLER, PUBLISH_HOST,
                                     ContainerSpec)
from cortex_app.hosting import SelfContainer, SelfMount
from cortex_app.images import PullError, explain_pull_error, split_reference
from cortex_app.runtime import docker_connect
from cortex_app.runtime.endpoints import Endpoint, EndpointInvalid
from cortex_app.runtime.types import ContainerInfo, EngineInfo  # noqa: F401 - re-exported

# A container nobody asked for gets this long to exit on SIGTERM before it is killed: it is
# gone well within a second even when it ignores SIGTERM.
DISCARD_GRACE_S = 0.25


class DockerRuntimeError(RuntimeError):
    """Base of every error this module raises."""


class EngineUnreachable(DockerRuntimeError):
    """No Docker Engine answers at the configured host."""

    problem = "unreachable"  # or tls | auth | host-key | not-docker (see docker_connect)


class ImageMissing(DockerRuntimeError):
    pass


class PortTaken(DockerRuntimeError):
    pass


class GpuUnavailable(DockerRuntimeError):
    pass


class ContainerConflict(DockerRuntimeError):
    pass


def _why(exc: BaseException) -> str:
    """The innermost useful reason, without the chain of wrapper exceptions."""
    text = getattr(exc, "explanation", None) or str(exc)
    for marker in ("No such file or directory", "Connection refused", "Permission denied", "timed out"):
        if marker.lower() in str(text).lower():
            return marker.lower()
    text = str(text)
    return text.splitlines()[0][:300] if text else type(exc).__name__


def _unreachable(host: str, exc: BaseException, own: bool = True) -> EngineUnreachable:
    """`own`: the console's DOCKER_HOST (else a host added on the Hosts page)."""
    return EngineUnreachable(f"no Docker Engine answers at {host} ({_why(exc)}); "
                             + ("start Docker or point DOCKER_HOST at a running engine" if own
                                else "check the host on the Hosts page"))


def client(target: Union[str, Endpoint], timeout: float = 10, *, fresh_tries: bool = False) -> docker.DockerClient:
    """A client bound to `target` (a DOCKER_HOST string, or a host's Endpoint); raises
    EngineUnreachable, whose `problem` says what failed, if no engine answers there.
    `fresh_tries`: see docker_connect.api_client."""
    try:
        return docker_connect.client(target, timeout, fresh_tries=fresh_tries)
    except docker_connect.ConnectFailed as exc:
        if isinstance(target, str):  # the console's own DOCKER_HOST
            failure = _unreachable(target, exc.cause or exc)
        else:
            failure = EngineUnreachable(str(exc))
        failure.problem = exc.problem
        raise failure from None


def check_ssh_key(text: str) -> None:
    """EndpointInvalid unless `text` is a private key the ssh transport can use."""
    docker_connect.load_ssh_key(text)


def engine_info(target: Union[str, Endpoint], timeout: float = 3) -> EngineInfo:
    """Whether the engine answers, and its version. Never raises."""
    url = target if isinstance(target, str) else target.url
    try:
        c = client(target, timeout=timeout)
    except EngineUnreachable as exc:
        return EngineInfo(host=url, reachable=False, error=str(exc), problem=getattr(exc, "problem", "unreachable"))
    except EndpointInvalid as exc:  # credentials that no longer load (a check never answers 500)
        return EngineInfo(host=url, reachable=False, error=str(exc), problem="credentials")
    try:
        return EngineInfo(host=url, reachable=True, version=getattr(c.api, "_cortex_engine_version", None),
                          api_version=c.api.api_version, seen_host_key=getattr(c.api, "seen_host_key", ""))
    finally:
        c.close()


SAMPLER_PIDS = 32
SAMPLER_MEMORY = "128m"
INGRESS_PIDS = 64  # nginx: a master and its workers
INGRESS_MEMORY = "256m"
MAX_LINE = 4096  # a followed container's line, at most: a longer one is dropped whole


def split_lines(chunks: Iterable[bytes], max_line: int = MAX_LINE) -> Iterator[bytes]:
    """The lines in a stream of chunks (without their newline). A line longer than `max_line`
    is dropped, and so is the rest of it up to its newline: what is kept between chunks never
    grows past `max_line`, whatever a container prints."""
    pending = b""
    dropping = False
    for chunk in chunks:
        *lines, rest = (pending + chunk).split(b"\n")
        for line in lines:
            if dropping:
                dropping = False  # the end of the long line
            elif len(line) <= max_line:
                yield line
        if len(rest) > max_line:
            dropping, rest = True, b""
        pending = b"" if dropping else rest


def _words(value) -> tuple[str, ...]:
    """An inspect's Entrypoint or Cmd: a list, a single string, or null."""
    if not value:
        return ()
    return (value,) if isinstance(value, str) else tuple(str(v) for v in value)


def _exit_code(status: str) -> Optional[int]:
    """The exit code in a list summary's status ("Exited (137) 2 seconds ago"), if any."""
    if status.startswith("Exited (") and ")" in status:
        code = status[len("Exited ("):status.index(")")]
        return int(code) if code.lstrip("-").isdigit() else None
    return None


def _abort(response) -> None:
    """Close a streamed response from another thread. Its socket is shut down first: that wakes
    a read blocked in it, which closing alone may not."""
    raw = getattr(response, "raw", None)
    sock = getattr(getattr(raw, "_connection", None), "sock", None)
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
    response.close()


class DockerRuntime:
    """Model containers on one Docker Engine. Thread-safe; one HTTP client, made on first use."""

    def __init__(self, docker_host: Union[str, Endpoint], timeout: float = 30,
                 extra_labels: Optional[dict[str, str]] = None, instance: Optional[str] = None):
        self.target = docker_host  # how to reach the engine
        self.host = docker_host if isinstance(docker_host, str) else docker_host.url  # how to name it
        self._own = isinstance(docker_host, str)  # the console's DOCKER_HOST
        self.instance = instance
        self.extra_labels = dict(extra_labels or {})  # added to every container this runtime creates
        if instance:
            # This install's containers carry its id, and it lists only those (see Installation).
            self.extra_labels[LABEL_INSTANCE] = instance
        self._timeout = timeout
        self._client: Optional[docker.DockerClient] = None
        self._lock = threading.Lock()

    def _c(self) -> docker.DockerClient:
        with self._lock:
            if self._client is not None:
                return self._client
        # Connected outside the lock: a connection begun while the engine's host was silent may
        # answer seconds after it is back (docker_connect.await_answer), and a call made once it
        # is back must not wait behind it; it connects on its own. The first client made is kept.
        made = client(self.target, timeout=self._timeout, fresh_tries=True)
        with self._lock:
            if self._client is None:
                self._client = made
                return made
            kept = self._client
        made.close()
        return kept

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    def _map(self, exc: BaseException, image: str = "", port: Optional[int] = None) -> DockerRuntimeError:
        if isinstance(exc, DockerRuntimeError):
            return exc
        if isinstance(exc, (requests.exceptions.ConnectionError, ConnectionError)):
            return _unreachable(self.host, exc, self._own)
        if isinstance(exc, docker.errors.ImageNotFound):
            where = "the Docker Engine" if self._own else f"the Docker Engine at {self.host}"
            return ImageMissing(f"image {image} is not on {where}; pull or build it there first "
                                f"(docker pull {image}), or choose another image")
        text = _why(exc)
        low = text.lower()
        if "could not select device driver" in low or "nvidia" in low and "runtime" in low:
            return GpuUnavailable("no GPU runtime: the Docker Engine cannot give this container NVIDIA GPUs "
                                  f"(install the NVIDIA Container Toolkit, or run the model on cpu) [{text}]")
        if "port is already allocated" in low or "address already in use" in low:
            return PortTaken(f"host port {port} is already in use [{text}]")
        if "cannot assign requested address" in low:
            return DockerRuntimeError("the engine cannot publish the model's port on the host's address: it is not "
                                      "one of that machine's own (behind NAT?). Give the host a DNS name as its "
                                      f"address instead; its models then publish on every interface [{text}]")
        if isinstance(exc, docker.errors.APIError) and exc.status_code == 409:
            return ContainerConflict(f"container conflict: {text}")
        if isinstance(exc, docker.errors.NotFound) and "no such image" in low:
            return ImageMissing(f"image {image} is not on the Docker Engine; pull or build it first")
        return DockerRuntimeError(f"Docker Engine error: {text}")

    def _scope(self) -> list[str]:
        """The label filter for 'our' containers."""
        labels = [f"{LABEL_MANAGED}=true"]
        if self.instance:
            labels.append(f"{LABEL_INSTANCE}={self.instance}")
        return labels

    # --- containers -----------------------------------------------------------------

    def create(self, spec: ContainerSpec, host_port: Optional[int],
               publish_host: Optional[str] = PUBLISH_HOST) -> ContainerInfo:
        """Create (not start) the container for `spec`, on `spec.network` if it names one. Its port
        is published on `publish_host` at `host_port` (None: a port the engine picks, see
        `published_port`), or not at all when `publish_host` is None."""
        ports = {f"{spec.container_port}/tcp": (publish_host, host_port)} if publish_host else {}
        kwargs = dict(
            image=spec.image,
            command=list(spec.args),
            name=spec.name,
            environment=dict(spec.env),
            labels={**self.extra_labels, **spec.labels},
            ports=ports,
            mounts=[docker.types.Mount(target=m.target, source=m.source, type="bind", read_only=m.read_only)
                    for m in spec.mounts],
            init=spec.init,
            restart_policy={"Name": spec.restart_policy},
            detach=True,
        )
        if spec.gpus is not None:
            ids = list(spec.gpus.device_ids) if spec.gpus.device_ids is not None else None
            kwargs["device_requests"] = [docker.types.DeviceRequest(
                driver="nvidia", device_ids=ids, count=None if ids else -1, capabilities=[["gpu"]])]
        if spec.shm_size:
            kwargs["shm_size"] = spec.shm_size
        if spec.ipc_mode:
            kwargs["ipc_mode"] = spec.ipc_mode
        if spec.network:
            kwargs["network"] = spec.network
        if spec.no_new_privileges:
            kwargs["security_opt"] = ["no-new-privileges:true"]
        if spec.pids_limit:
            kwargs["pids_limit"] = spec.pids_limit
        try:
            c = self._c().containers.create(**kwargs)
        except Exception as exc:  # noqa: BLE001 - mapped to our own errors
            raise self._map(exc, image=spec.image, port=host_port) from None
        return ContainerInfo(id=c.id, name=spec.name, state="created", labels={**self.extra_labels, **spec.labels})

    def start(self, container_id: str, port: Optional[int] = None) -> None:
        try:
            self._c().api.start(container_id)
        except Exception as exc:  # noqa: BLE001
            raise self._map(exc, port=port) from None

    def create_and_start(self, spec: ContainerSpec, host_port: Optional[int],
                         publish_host: Optional[str] = PUBLISH_HOST) -> ContainerInfo:
        """Create and start; a container that was created but would not start is removed, so a
        failure leaves nothing behind."""
        info = self.create(spec, host_port, publish_host)
        try:
            self.start(info.id, port=host_port)
        except DockerRuntimeError:
            self.remove(info.id)
            raise
        return ContainerInfo(id=info.id, name=info.name, state="running", labels=info.labels)

    def published_port(self, container_id: str, container_port: int) -> Optional[int]:
        """The host port the engine gave `container_port` (None if it is not published)."""
        try:
            a = self._c().api.inspect_container(container_id)
        except Exception as exc:  # noqa: BLE001
            raise self._map(exc) from None
        bindings = ((a.get("NetworkSettings") or {}).get("Ports") or {}).get(f"{container_port}/tcp") or []
        ports = [int(b["HostPort"]) for b in bindings if str(b.get("HostPort", "")).isdigit()]
        return ports[0] if ports else None

    # --- the console's own container and the network it shares with its models ------------

    def self_container(self, container_id: str) -> Optional[SelfContainer]:
        """The container with this id (or name), if it exists on this engine."""
        try:
            a = self._c().api.inspect_container(container_id)
        except docker.errors.NotFound:
            return None
        except docker.errors.APIError:
            return None  # e.g. an ambiguous short id: not provably ours
        except Exception as exc:  # noqa: BLE001
            raise self._map(exc) from None
        mounts = tuple(SelfMount(source=m.get("Source", ""), destination=m.get("Destination", ""))
                       for m in a.get("Mounts") or [] if m.get("Source") and m.get("Destination"))
        networks = tuple(((a.get("NetworkSettings") or {}).get("Networks") or {}).keys())
        return SelfContainer(id=a["Id"], name=a.get("Name", "").lstrip("/"), mounts=mounts, networks=networks)

    def ensure_network(self, name: str) -> None:
        """A user-defined bridge network called `name` (where containers find each other by
        name); created if missing."""
        try:
            # The name filter matches parts of names (cortex ~ cortex_default): compare whole names.
            if not any(n.get("Name") == name for n in self._c().api.networks(names=[name])):
                self._c().api.create_network(name, driver="bridge", check_duplicate=True,
                                             labels={LABEL_MANAGED: "true"})
        except docker.errors.APIError as exc:
            if exc.status_code == 409:
                return  # created meanwhile by someone else
            raise self._map(exc) from None
        except Exception as exc:  # noqa: BLE001
            raise self._map(exc) from None

    def remove_network(self, name: str) -> None:
        """Remove the network `name` if it is there (nothing attached may be left on it)."""
        try:
            for n in self._c().api.networks(names=[name]):
                if n.get("Name") == name:
                    self._c().api.remove_network(n["Id"])
        except docker.errors.NotFound:
            return
        except Exception as exc:  # noqa: BLE001
            raise self._map(exc) from None

    def connect_network(self, name: str, container_id: str) -> None:
        try:
            self._c().api.connect_container_to_network(container_id, name)
        except docker.errors.APIError as exc:
            if "already exists" in str(exc).lower():
                return
            raise self._map(exc) from None
        except Exception as exc:  # noqa: BLE001
            raise self._map(exc) from None

    def stop_and_remove(self, container_id: str, timeout: int = 10) -> Optional[int]:
        """Graceful stop (SIGTERM, SIGKILL after `timeout` s), then remove. Returns the exit code,
        or None if there was no such container."""
        try:
            c = self._c().containers.get(container_id)
            if c.status in ("running", "restarting", "paused"):
                c.stop(timeout=timeout)
            c.reload()
            code = c.attrs["State"].get("ExitCode")
            c.remove(force=True)
            return code
        except docker.errors.NotFound:
            return None
        except Exception as exc:  # noqa: BLE001
            raise self._map(exc) from None

    def discard(self, container_id: str, grace_s: float = DISCARD_GRACE_S) -> bool:
        """A container nobody asked for: SIGTERM, `grace_s` seconds to exit, then SIGKILL and
        remove (also when it is paused). `grace_s` 0: SIGKILL at once (a paused one is not
        resumed to shut down). False if there was no such container."""
        api = self._c().api
        try:
            if grace_s > 0:
                try:
                    api.kill(container_id, signal="SIGTERM")
                except docker.errors.NotFound:
                    return False
                except docker.errors.APIError:
                    pass  # not running (exited, created): nothing to wait for
                else:
                    try:
                        api.wait(container_id, timeout=grace_s)
                    except requests.exceptions.RequestException:
                        pass  # still running after the grace: the forced removal kills it
            api.remove_container(container_id, force=True)
            return True
        except docker.errors.NotFound:
            return False
        except docker.errors.APIError as exc:
            if exc.status_code == 409 and "already in progress" in str(exc):
                return True  # someone else is removing it right now
            raise self._map(exc) from None
        except Exception as exc:  # noqa: BLE001
            raise self._map(exc) from None

    def remove(self, container_id: str) -> None:
        try:
            self._c().api.remove_container(container_id, force=True)
        except docker.errors.NotFound:
            pass
        except Exception as exc:  # noqa: BLE001
            raise self._map(exc) from None

    def list_managed(self, model_id: Optional[int] = None) -> list[ContainerInfo]:
        """Every managed container (or one model's), running or not: one API call."""
        labels = self._scope()
        if model_id is not None:
            labels.append(f"{LABEL_MODEL_ID}={model_id}")
        try:
            rows = self._c().api.containers(all=True, filters={"label": labels})
        except Exception as exc:  # noqa: BLE001
            raise self._map(exc) from None
        return [self._summary(r) for r in rows]

    def list_by_name(self, prefix: str) -> list[ContainerInfo]:
        """Containers whose name contains `prefix` (Docker's name filter is a substring match)."""
        try:
            rows = self._c().api.containers(all=True, filters={"name": prefix})
        except Exception as exc:  # noqa: BLE001
            raise self._map(exc) from None
        return [self._summary(r) for r in rows]

    @staticmethod
    def _summary(r: dict) -> ContainerInfo:
        return ContainerInfo(id=r["Id"], name=(r.get("Names") or ["/?"])[0].lstrip("/"), state=r.get("State", ""),
                             labels=r.get("Labels") or {}, exit_code=_exit_code(r.get("Status", "")),
                             image=r.get("Image", ""))

    # --- a remote host's GPU sampler (gpu_samplers.py) ------------------------------------------

    def samplers(self) -> list[ContainerInfo]:
        """This install's GPU sampler containers on this engine, in any state: one list call.
        They carry no `cortex.managed` label, so no model's reconcile pass ever sees them."""
        return self._labelled(LABEL_SAMPLER)

    def _labelled(self, label: str) -> list[ContainerInfo]:
        labels = [f"{label}=true"] + ([f"{LABEL_INSTANCE}={self.instance}"] if self.instance else [])
        try:
            rows = self._c().api.containers(all=True, filters={"label": labels})
        except Exception as exc:  # noqa: BLE001
            raise self._map(exc) from None
        return [self._summary(r) for r in rows]

    def remove_samplers(self) -> int:
        """Remove this install's GPU samplers from this engine; how many there were."""
        found = self.samplers()
        for c in found:
            self.discard(c.id)
        return len(found)

    def run_sampler(self, name: str, image: str, args: list[str]) -> ContainerInfo:
        """Create and start a sampler with every GPU attached (the NVIDIA Container Toolkit
        brings nvidia-smi in), restart policy `no`: it runs because the console runs it."""
        labels = {**self.extra_labels, LABEL_SAMPLER: "true"}
        try:
            c = self._c().containers.create(
                image=image, command=args, name=name, labels=labels, detach=True, restart_policy={"Name": "no"},
                environment={"NVIDIA_DRIVER_CAPABILITIES": "utility"}, security_opt=["no-new-privileges:true"],
                # nvidia-smi reads the driver through the devices it is given and needs nothing
                # more: no capability, no network, a few processes, a little memory.
                cap_drop=["ALL"], network_mode="none", pids_limit=SAMPLER_PIDS, mem_limit=SAMPLER_MEMORY,
                device_requests=[docker.types.DeviceRequest(driver="nvidia", count=-1, capabilities=[["gpu"]])],
                log_config=docker.types.LogConfig(type="json-file", config={"max-size": "1m", "max-file": "1"}))
        except Exception as exc:  # noqa: BLE001
            raise self._map(exc, image=image) from None
        try:
            self.start(c.id)
        except DockerRuntimeError:
            self.remove(c.id)
            raise
        return ContainerInfo(id=c.id, name=name, state="running", labels=labels)

    # --- a remote host's ingress (cortex_app/ingress) ------------------------------------------

    def ingresses(self) -> list[ContainerInfo]:
        """This install's ingress containers on this engine, in any state (no `cortex.managed`
        label either: no model's pass sees them)."""
        return self._labelled(LABEL_INGRESS)

    def remove_ingresses(self) -> int:
        found = self.ingresses()
        for c in found:
            self.discard(c.id, grace_s=0)
        return len(found)

    def run_ingress(self, name: str, image: str, *, network: str, publish_host: str, container_port: int,
                    files: dict[str, tuple[bytes, int]], folder: str, command: list[str],
                    labels: dict[str, str]) -> tuple[ContainerInfo, int]:
        """Create the ingress on `network`, publishing `container_port` on `publish_host` at a
        port the engine picks; put `files` ({name: (content, mode)}, owned by the user it runs
        as) into `folder` before it starts, so no secret is ever in its command, environment or
        an image; start it. (its info, the published port). Restart policy `no`; no capability,
        nobody's user, a few processes, a little memory."""
        labels = {**self.extra_labels, **labels, LABEL_INGRESS: "true"}
        try:
            c = self._c().containers.create(
                image=image, entrypoint=command[:1], command=command[1:], name=name, labels=labels, detach=True,
                restart_policy={"Name": "no"}, user=f"{NOBODY}:{NOBODY}", security_opt=["no-new-privileges:true"],
                cap_drop=["ALL"], pids_limit=INGRESS_PIDS, mem_limit=INGRESS_MEMORY, tmpfs={"/tmp": "size=64m"},
                network=network, ports={f"{container_port}/tcp": (publish_host, None)},
                log_config=docker.types.LogConfig(type="json-file", config={"max-size": "1m", "max-file": "1"}))
        except Exception as exc:  # noqa: BLE001
            raise self._map(exc, image=image) from None
        try:
            if not c.put_archive("/", _tar(folder, files)):
                raise DockerRuntimeError(f"the engine would not take the ingress's files into {folder}")
            self.start(c.id)
            port = self.published_port(c.id, container_port)
            if port is None:
                raise DockerRuntimeError("the engine published no port for the ingress")
        except Exception as exc:  # noqa: BLE001 - nothing half-made is left
            try:
                self.remove(c.id)
            except DockerRuntimeError:
                pass
            raise self._map(exc) from None
        return ContainerInfo(id=c.id, name=name, state="running", labels=labels), port

    def follow_lines(self, container_id: str, stopped: Callable[[], bool]) -> Iterator[str]:
        """A container's output, line by line as it comes, on a connection of its own; ends
        when the container does, when the engine stops answering (its read timeout), or when
        `stopped()` is true at the next line."""
        api = self._stream_client()
        try:
            chunks = api.logs(container_id, stdout=True, stderr=False, stream=True, follow=True, tail=20)
            for line in split_lines(chunks):
                if stopped():
                    return
                yield line.decode("utf-8", errors="replace")
        except docker.errors.NotFound:
            return
        except docker.errors.APIError as exc:
            raise self._map(exc) from None
        except Exception as exc:  # noqa: BLE001 - a read timeout (urllib3's own), a closed connection
            raise _unreachable(self.host, exc, self._own) from None
        finally:
            api.close()

    def image_tags(self) -> list[str]:
        """Every image reference on the engine: its tags and its digests (`repo@sha256:…`)."""
        try:
            images = self._c().api.images()
        except Exception as exc:  # noqa: BLE001
            raise self._map(exc) from None
        return sorted(t for i in images for t in (i.get("RepoTags") or []) + (i.get("RepoDigests") or [])
                      if not t.startswith("<none>"))

    def _stream_client(self) -> docker.APIClient:
        """A connection of one stream's own (a pull, a stats reader): closing it ends that stream
        and nothing else."""
        try:
            return docker_connect.api_client(self.target, timeout=self._timeout)
        except docker_connect.ConnectFailed as exc:
            raise _unreachable(self.host, exc.cause or exc, self._own) from None

    def image_present(self, image: str) -> bool:
        try:
            self._c().api.inspect_image(image)
            return True
        except docker.errors.ImageNotFound:
            return False
        except Exception as exc:  # noqa: BLE001
            raise self._map(exc) from None

    def pull(self, image: str, cancel: threading.Event) -> Iterator[dict]:
        """The engine's progress messages while it pulls `image` (`{"status", "id",
        "progressDetail"}`), on a connection of the pull's own. Setting `cancel` closes that
        connection at once, even while the engine sends nothing (a stalled registry), and the
        engine abandons the pull; the iteration then ends. Raises PullError with what the admin
        can do, or EngineUnreachable."""
        repo, ref = split_reference(image)
        api = self._stream_client()
        responses: list = []  # the pull's streamed response, for the closer below
        api.hooks["response"].append(lambda r, *args, **kwargs: responses.append(r))
        finished = threading.Event()

        def closer() -> None:
            while not finished.is_set():
                if cancel.wait(0.2):
                    for r in responses:
                        _abort(r)
                    return

        threading.Thread(target=closer, name=f"pull-cancel {image}", daemon=True).start()
        try:
            for msg in api.pull(repo, tag=ref, stream=True, decode=True):
                if cancel.is_set():
                    return
                yield msg
        except docker.errors.APIError as exc:
            raise PullError(explain_pull_error(image, exc.explanation or str(exc))) from None
        except Exception as exc:  # noqa: BLE001 - a connection closed by cancel, or the engine gone
            if cancel.is_set():
                return
            raise _unreachable(self.host, exc, self._own) from None
        finally:
            finished.set()
            for r in responses:
                r.close()
            api.close()

    def stats(self, container_id: str, stopped: Callable[[], bool]) -> Iterator[dict]:
        """The engine's stats messages for one container (about one a second) on a connection
        of their own, until the container goes, the engine closes the stream, or `stopped()` is
        true at the next message. Raises EngineUnreachable; a container already gone ends it."""
        api = self._stream_client()
        try:
            for msg in api.stats(container_id, decode=True, stream=True):
                # A container that stopped gets empty messages (read 0001-01-01) for ever.
                if stopped() or str(msg.get("read", "")).startswith("0001-"):
                    return
                yield msg
        except docker.errors.NotFound:
            return
        except (requests.exceptions.ConnectionError, ConnectionError) as exc:
            raise _unreachable(self.host, exc, self._own) from None
        except docker.errors.APIError as exc:
            raise self._map(exc) from None
        finally:
            api.close()

    def container_pids(self, container_id: str) -> list[int]:
        """The host PIDs of a container's processes (as the engine sees them; [] once it is gone)."""
        try:
            top = self._c().api.top(container_id, ps_args="-o pid")
        except docker.errors.APIError as exc:
            if exc.status_code in (404, 409):  # gone, or not running
                return []
            raise self._map(exc) from None
        except Exception as exc:  # noqa: BLE001
            raise self._map(exc) from None
        return [int(row[0]) for row in top.get("Processes") or [] if row and str(row[0]).isdigit()]

    def inspect(self, container_id: str) -> Optional[ContainerInfo]:
        try:
            a = self._c().api.inspect_container(container_id)
        except docker.errors.NotFound:
            return None
        except Exception as exc:  # noqa: BLE001
            raise self._map(exc) from None
        st = a.get("State", {})
        config = a.get("Config") or {}
        return ContainerInfo(
            id=a["Id"], name=a.get("Name", "").lstrip("/"), state=st.get("Status", ""),
            labels=config.get("Labels") or {}, exit_code=st.get("ExitCode"),
            oom_killed=bool(st.get("OOMKilled")),
            restart_policy=(a.get("HostConfig", {}).get("RestartPolicy") or {}).get("Name"),
            image=config.get("Image", ""),
            command=_words(config.get("Entrypoint")) + _words(config.get("Cmd")))

    def is_running(self, container_id: str) -> Optional[bool]:
        """Whether this container exists and runs (or is paused) here; None when the engine
        cannot say."""
        try:
            info = self.inspect(container_id)
        except DockerRuntimeError:
            return None
        return info is not None and info.live

    def logs_tail(self, container_id: str, lines: int = 200) -> str:
        try:
            raw = self._c().api.logs(container_id, stdout=True, stderr=True, tail=lines)
        except docker.errors.NotFound:
            return ""
        except Exception as exc:  # noqa: BLE001
            raise self._map(exc) from None
        return raw.decode("utf-8", errors="replace")

    def events(self, since: Optional[int] = None):
        """Container events of managed containers: an iterable of decoded dicts with a
        `close()` that ends the stream (and the iteration) from another thread."""
        try:
            return self._c().api.events(since=since, decode=True,
                                        filters={"type": "container", "label": self._scope()})
        except Exception as exc:  # noqa: BLE001
            raise self._map(exc) from None


NOBODY = 65534


def _tar(folder: str, files: dict[str, tuple[bytes, int]]) -> bytes:
    """A tar (in memory) of `folder` (absolute) holding `files`, all owned by nobody."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        top = tarfile.TarInfo(folder.strip("/"))
        top.type, top.mode, top.uid, top.gid = tarfile.DIRTYPE, 0o500, NOBODY, NOBODY
        tar.addfile(top)
        for name, (content, mode) in sorted(files.items()):
            info = tarfile.TarInfo(f"{folder.strip('/')}/{name}")
            info.size, info.mode, info.uid, info.gid = len(content), mode, NOBODY, NOBODY
            tar.addfile(info, io.BytesIO(content))
    return buf.getvalue()
