"""Hosts page: the Docker Engines Cortex drives. Added after a connection check (the form says
what failed), checked on demand, removed; credentials go in and never come back out."""

from __future__ import annotations

import asyncio

import reflex as rx

from cortex_app import hosts
from cortex_app.services import get as services
from cortex_app.states.auth import AdminState

KINDS = ("tls", "ssh")
FORM_FIELDS = ("name", "endpoint", "address", "models-dir", "tls-ca", "tls-cert", "tls-key", "ssh-key", "ssh-host-key")  # ids: host-…


def gpu_text(row: dict) -> str:
    """A host's GPUs as the table shows them, one per line."""
    if row["gpus"]:
        return "\n".join(f"{g['index']}: {g['name']} · {g['memory_total_mib']:,} MiB" for g in row["gpus"])
    return "none (NVML)" if row["local"] else "not read yet"


class HostsState(AdminState):
    hosts: list[dict] = []
    kind: str = "tls"  # the form's endpoint kind: tls | ssh
    # The form's fields are never state: they come with the submit only, so no key or
    # certificate is kept in the tab's state (nor in Redis, where a state manager keeps it).
    error: str = ""
    adding: bool = False
    checking: int = 0  # the host being checked (0: none)

    async def _refresh(self):
        svc = services()
        rows = await asyncio.to_thread(hosts.list_hosts, svc.db)
        self.hosts = [{**(j := hosts.host_json(h, svc.settings)), "gpus": gpu_text(j)} for h in rows]

    @rx.event
    async def load(self):
        if await self._admin() is None:
            return rx.redirect("/login")
        self.error = ""
        await self._refresh()

    @rx.event
    async def tick(self, _=None):
        """The page's periodic refresh: what the scheduler's checks found."""
        if await self._admin() is None:
            return rx.redirect("/login")
        await self._refresh()

    @rx.event
    def set_kind(self, v: str | list[str]):
        self.kind = v if isinstance(v, str) and v in KINDS else "tls"
        self.error = ""

    @rx.event(background=True)
    async def add_host(self, form: dict):
        async with self:
            if await self._admin() is None:
                return rx.redirect("/login")
            if self.adding:
                return
            self.adding, self.error = True, ""
            svc = services()
            tls = self.kind == "tls"

            def field(name: str) -> str:
                value = form.get(name, "")
                return value if isinstance(value, str) else ""

            args = dict(name=field("name"), endpoint_url=field("endpoint"), address=field("address"),
                        models_dir=field("models_dir"),
                        tls_ca=field("tls_ca") if tls else "", tls_cert=field("tls_cert") if tls else "",
                        tls_key=field("tls_key") if tls else "", ssh_key="" if tls else field("ssh_key"),
                        ssh_host_key="" if tls else field("ssh_host_key"))
        try:
            # The check may take seconds (an ssh handshake, a host that does not answer): the page
            # stays live, the button shows it works.
            row = await asyncio.to_thread(hosts.add_host, svc.db, svc.settings, **args)
        except hosts.HostInvalid as exc:
            async with self:
                self.adding, self.error = False, str(exc)
            if exc.seen_host_key:  # to confirm: Add again sends it
                return rx.set_value("host-ssh-host-key", exc.seen_host_key)
            return
        await svc.scheduler.hosts_changed()  # its event stream followed at once
        async with self:
            self.adding, self.error = False, ""
            await self._refresh()
        return [*[rx.set_value(f"host-{f}", "") for f in FORM_FIELDS],
                rx.toast.success(f"host {row.name} added: Docker Engine {row.engine_version}")]

    @rx.event(background=True)
    async def check_host(self, host_id: int):
        async with self:
            if await self._admin() is None:
                return rx.redirect("/login")
            self.checking = host_id
            svc = services()
        try:
            row = await asyncio.to_thread(hosts.check_on_demand, svc.db, svc.settings, host_id)
        except hosts.HostNotFound:
            row = None
        async with self:
            self.checking = 0
            await self._refresh()
        if row is None:
            return rx.toast.error(f"no host {host_id}: removed meanwhile")
        if row.reachable:
            return rx.toast.success(f"{row.name}: Docker Engine {row.engine_version} answers")
        return rx.toast.error(f"{row.name}: {row.last_error}")

    @rx.event
    async def remove_host(self, host_id: int):
        if await self._admin() is None:
            return rx.redirect("/login")
        try:
            svc = services()
            row = await asyncio.to_thread(hosts.remove_host, svc.db, svc.settings, host_id, svc.runtime.instance)
            svc.lifecycle.runtimes.forget(host_id)
            await svc.scheduler.hosts_changed()
        except (hosts.HostInvalid, hosts.HostNotFound) as exc:
            await self._refresh()
            return rx.toast.error(str(exc))
        await self._refresh()
        return rx.toast.success(f"host {row.name} removed")
