"""Hosts page: the Docker Engines Cortex drives. Added after a connection check (the form says
what failed), checked on demand, removed; credentials go in and never come back out."""

from __future__ import annotations

import asyncio

import reflex as rx

from cortex_app import hosts
from cortex_app.services import get as services
from cortex_app.states.auth import AdminState

KINDS = ("tls", "ssh")


def gpu_text(row: dict) -> str:
    """A host's GPUs as the table shows them, one per line."""
    if row["gpus"]:
        return "\n".join(f"{g['index']}: {g['name']} · {g['memory_total_mib']:,} MiB" for g in row["gpus"])
    return "none (NVML)" if row["local"] else "not read yet"


class HostsState(AdminState):
    hosts: list[dict] = []
    kind: str = "tls"  # the form's endpoint kind: tls | ssh
    name: str = ""
    endpoint: str = ""
    address: str = ""
    tls_ca: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    ssh_key: str = ""
    ssh_host_key: str = ""
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

    @rx.event
    def set_field(self, field: str, value: str):
        if field in ("name", "endpoint", "address", "tls_ca", "tls_cert", "tls_key", "ssh_key", "ssh_host_key"):
            setattr(self, field, value)

    def _clear(self) -> None:
        self.name = self.endpoint = self.address = self.error = ""
        self.tls_ca = self.tls_cert = self.tls_key = self.ssh_key = self.ssh_host_key = ""

    @rx.event(background=True)
    async def add_host(self):
        async with self:
            if await self._admin() is None:
                return rx.redirect("/login")
            if self.adding:
                return
            self.adding, self.error = True, ""
            svc = services()
            tls = self.kind == "tls"
            args = dict(name=self.name, endpoint_url=self.endpoint, address=self.address,
                        tls_ca=self.tls_ca if tls else "", tls_cert=self.tls_cert if tls else "",
                        tls_key=self.tls_key if tls else "", ssh_key="" if tls else self.ssh_key,
                        ssh_host_key="" if tls else self.ssh_host_key)
        try:
            # The check may take seconds (an ssh handshake, a host that does not answer): the page
            # stays live, the button shows it works.
            row = await asyncio.to_thread(hosts.add_host, svc.db, svc.settings, **args)
        except hosts.HostInvalid as exc:
            async with self:
                self.adding, self.error = False, str(exc)
            return
        async with self:
            self.adding = False
            self._clear()
            await self._refresh()
        return rx.toast.success(f"host {row.name} added: Docker Engine {row.engine_version}")

    @rx.event(background=True)
    async def check_host(self, host_id: int):
        async with self:
            if await self._admin() is None:
                return rx.redirect("/login")
            self.checking = host_id
            svc = services()
        try:
            row = await asyncio.to_thread(hosts.check_host, svc.db, svc.settings, host_id)
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
        except (hosts.HostInvalid, hosts.HostNotFound) as exc:
            await self._refresh()
            return rx.toast.error(str(exc))
        await self._refresh()
        return rx.toast.success(f"host {row.name} removed")
