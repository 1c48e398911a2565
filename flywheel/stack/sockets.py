"""Who listens where, read from the kernel's socket table (/proc), so no tool is needed.

The supervisor uses it to tell "our server answers" from "something else holds the port", and
tests use it to prove that ``flywheel down`` leaves no listener behind.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

_LISTEN = "0A"


@dataclass(frozen=True)
class Listener:
    pid: int
    pgid: int
    address: str  # hex as the kernel writes it; all zeros is the wildcard address
    port: int

    @property
    def wildcard(self) -> bool:
        return set(self.address) == {"0"}


def _listening_inodes() -> dict[str, tuple[str, int]]:
    inodes: dict[str, tuple[str, int]] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as handle:
                rows = list(handle)[1:]
        except FileNotFoundError:
            continue
        for row in rows:
            fields = row.split()
            address, port_hex = fields[1].rsplit(":", 1)
            if fields[3] == _LISTEN:
                inodes[fields[9]] = (address, int(port_hex, 16))
    return inodes


def listeners(ports: set[int] | None = None) -> list[Listener]:
    """Every TCP listener (optionally only on ``ports``) with the process holding it.

    A listening socket whose owner cannot be inspected (another user's process, or one in
    another PID namespace) is still reported, with ``pid`` and ``pgid`` -1: "someone holds it".
    """
    inodes = _listening_inodes()
    if ports is not None:
        inodes = {inode: where for inode, where in inodes.items() if where[1] in ports}
    if not inodes:
        return []
    found: dict[str, Listener] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        try:
            descriptors = list((entry / "fd").iterdir())
            pgid = os.getpgid(pid)
        except (ProcessLookupError, PermissionError, FileNotFoundError, NotADirectoryError):
            continue  # ended while we looked, or not ours to read: see the unowned ones below
        for descriptor in descriptors:
            try:
                target = os.readlink(descriptor)
            except OSError:
                continue  # that descriptor closed meanwhile; the others still count
            inode = target[8:-1] if target.startswith("socket:[") else None
            if inode in inodes:
                address, port = inodes[inode]
                found.setdefault(f"{inode}/{pid}", Listener(pid, pgid, address, port))
    owned = {key.split("/")[0] for key in found}
    unowned = [Listener(-1, -1, *where) for inode, where in inodes.items() if inode not in owned]
    return [*found.values(), *unowned]


#: Ports this process has handed out already: two servers of one stack never get the same one.
_HANDED_OUT: set[int] = set()


def ephemeral_port_range() -> tuple[int, int]:
    """The range the kernel picks outgoing connections' local ports from (Linux's default if unread)."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def free_port(host: str = "127.0.0.1", below: int | None = None) -> int:
    """A port nothing listens on right now, for short-lived private servers (``below``: at most that).

    Picked at random *outside* the kernel's ephemeral range (below it, or above it where the
    range starts too low): a port from that range (the kernel's own pick for port 0) can be taken
    as the local port of any outgoing connection before the server it was picked for binds it,
    and a stack starts a dozen servers over a minute (a gateway lost its gRPC port that way in CI).
    Random, so concurrent test processes rarely pick the same one.
    """
    import random
    import socket

    low, high = ephemeral_port_range()
    first, last = (max(1024, low - 12000), low - 1) if low - 1024 >= 1000 else (high + 1, 65535)
    if below is not None:
        last = min(last, below)
    if last < first:
        raise RuntimeError(
            f"no port range outside the ephemeral {low}-{high} (net.ipv4.ip_local_port_range)"
            + (f" at or below {below}" if below is not None else "")
        )
    for _ in range(200):
        port = random.randint(first, last)
        if port in _HANDED_OUT:
            continue
        with socket.socket() as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port
    raise RuntimeError(f"no free port on {host} in {first}-{last} after 200 tries")
