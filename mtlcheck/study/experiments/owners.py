"""Who holds a run, and whether they still live: owner names ``host:pid:token`` and their liveness.

A lease names its owner by this host (hostname plus kernel boot id), this process's pid and a
random token that is *live* while the lease is open in this process. Another process may take
the run over when the owner's heartbeat is older than `stale_after` (any host), or at once when
the owner ran on this host and its pid is gone or a zombie, or when its pid is this process but
its token is not live here (the pid was reused). On Windows only the heartbeat counts. A host
may be qualified as ``HOST@where`` (a Ray worker names its node: ``HOST@ray-node-<id>``); such an
owner's liveness beyond its heartbeat is left to the store's `is_dead` judge.
"""

from __future__ import annotations

import os
import socket
import threading
import uuid
from pathlib import Path

__all__ = ["HOST", "dead_reason", "new_owner", "owned_by_this_thread", "parse_owner", "pid_alive", "retire"]


def _host_id() -> str:
    """Hostname plus the kernel boot id (Linux), so a reboot or a same-named machine differs."""
    host = socket.gethostname().replace(":", "_") or "unknown-host"
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()[:8]
    except OSError:
        return host
    return f"{host}/{boot}"


HOST = _host_id()
_LIVE_TOKENS: dict[str, int] = {}  # token of each open lease in this process -> leasing thread
_LIVE_LOCK = threading.Lock()


def parse_owner(owner: str) -> tuple[str, int, str]:
    """``host:pid:token`` -> (host, pid, token); ValueError if malformed."""
    host, pid, token = owner.rsplit(":", 2)
    return host, int(pid), token


def new_owner(host: str | None = None) -> str:
    """A fresh owner name for this process and thread, live until `retire`d (it is live before
    any row names it, so a racing thread never sees it dead). `host` (default `HOST`) may qualify
    this host, as ``HOST@where`` (a Ray worker names its node so)."""
    if host is not None and not (host == HOST or host.startswith(f"{HOST}@")):
        raise ValueError(f"new_owner: host must be {HOST!r} or start with {HOST + '@'!r}, got {host!r}")
    token = uuid.uuid4().hex[:12]
    with _LIVE_LOCK:
        _LIVE_TOKENS[token] = threading.get_ident()
    return f"{host or HOST}:{os.getpid()}:{token}"


def retire(owner: str) -> None:
    """The owner's token stops being live in this process (its lease ended or was never won)."""
    with _LIVE_LOCK:
        _LIVE_TOKENS.pop(parse_owner(owner)[2], None)


def pid_alive(pid: int) -> bool:
    """Whether process `pid` on this host runs (a zombie counts as dead; always True on Windows)."""
    if os.name == "nt":  # os.kill would terminate the process; rely on heartbeats there
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed child not yet reaped is a zombie: dead for our purposes
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")


def owned_by_this_thread(owner: str | None) -> bool:
    """Whether `owner` is a live lease opened by the calling thread of this process."""
    try:
        host, pid, token = parse_owner(owner or "")
    except ValueError:
        return False
    with _LIVE_LOCK:
        here = host == HOST or host.startswith(f"{HOST}@")
        return here and pid == os.getpid() and _LIVE_TOKENS.get(token) == threading.get_ident()


def dead_reason(owner: str | None, heartbeat: float | None, now: float, stale_after: float) -> str | None:
    """Why a running lease may be taken over at wall time `now`, or None while its owner counts
    as alive."""
    if owner is None or heartbeat is None:
        return "running row without owner or heartbeat"
    age = now - heartbeat
    if age > stale_after:
        return f"heartbeat {age:.1f}s old (stale_after={stale_after:g}s)"
    try:
        host, pid, token = parse_owner(owner)
    except ValueError:
        return f"unparseable owner {owner!r}"
    if host != HOST:
        return None
    if pid == os.getpid():
        with _LIVE_LOCK:
            alive = token in _LIVE_TOKENS
        return None if alive else f"owner token {token} is not live in this process (pid {pid} reused)"
    return None if pid_alive(pid) else f"owner process {pid} on this host is dead"
