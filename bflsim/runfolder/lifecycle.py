"""Who owns a run folder, whether its process still lives, and how a signal ends a run.

A run folder is written by one process at a time. :func:`process_identity` is what the
manifest records about it (``writer``: a random token, the process id, the host, the boot
and the process's start time); every write first calls :func:`check_writer`, which refuses
(:class:`StaleWriter`) once the run has finished or when the folder on disk is no longer
this writer's run (a newer run re-created the path, or another process resumed it).

A run whose manifest says ``running`` may have lost its process (SIGKILL, a crash, a
reboot): :func:`effective_status` calls it ``interrupted`` when the recorded process is
gone from this host (its id is free, or taken by a process that started at another time),
and :func:`stop_leftovers` ends the processes such a run recorded (Ray's, by id and start
time) that outlived it.

:func:`raise_on_signals` turns SIGINT and SIGTERM into :class:`RunInterrupted` (a
``KeyboardInterrupt``) in the main thread, so the lifecycle of
:meth:`bflsim.runfolder.RunFolder.start` marks the run ``interrupted``.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "RunInterrupted",
    "StaleWriter",
    "check_writer",
    "descendants",
    "effective_status",
    "exit_code",
    "new_token",
    "process_alive",
    "process_identity",
    "raise_on_signals",
    "start_ticks",
    "status_line",
    "stop_leftovers",
]

MANIFEST = "manifest.json"
GONE = "process gone"


class StaleWriter(RuntimeError):
    """A write to a run folder this writer no longer owns (finished, or another run's now)."""


class RunInterrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived: the run ends ``interrupted``."""

    def __init__(self, signum: int = signal.SIGINT) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)


def exit_code(err: BaseException) -> int:
    """The shell's exit status for an interrupt: 128 + the signal (130 SIGINT, 143 SIGTERM)."""
    return 128 + (err.signum if isinstance(err, RunInterrupted) else int(signal.SIGINT))


def raise_on_signals(on_signal: Callable[[int], None] | None = None) -> None:
    """SIGINT and SIGTERM raise :class:`RunInterrupted` in the main thread (once: a second
    signal while the run is stopping is ignored, so the cleanup can finish).

    ``on_signal(signum)`` runs first: mark the run folder, stop the server thread, quiet the
    logs of threads that are about to fail, before the teardown that may itself fail.
    """
    if threading.current_thread() is not threading.main_thread():
        return

    def handler(signum: int, frame: Any) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, _stopping)
        if on_signal is not None:
            on_signal(signum)
        raise RunInterrupted(signum)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, handler)


def _stopping(signum: int, frame: Any) -> None:
    os.write(2, b"bflsim: already stopping; the run folder is being closed (SIGKILL forces it)\n")


# --- processes ---------------------------------------------------------------------------


def _stat(pid: int) -> list[str] | None:
    """Fields of ``/proc/<pid>/stat`` after the command name (index 0 is the state)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rfind(")") + 2:].split()


def running(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie."""
    fields = _stat(pid)
    return bool(fields) and fields[0] != "Z"


def processes_with_env(marker: bytes) -> list[int]:
    """Ids of the running processes (not this one) whose environment holds ``marker``
    (``NAME=value``): those started with a value no other process has, e.g. an own ``FLWR_HOME``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if marker in (entry / "environ").read_bytes().split(b"\0") and running(int(entry.name)):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def stop_processes(pids: list[int], grace: float = 10.0) -> list[int]:
    """SIGTERM each process by id, SIGKILL those left after ``grace`` seconds; ``pids``."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        while any(running(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.2)
        if not any(running(p) for p in pids):
            break
    return pids


def start_ticks(pid: int) -> int | None:
    fields = _stat(pid)
    return int(fields[19]) if fields else None  # field 22 of proc(5): start time since boot


def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def new_token() -> str:
    return secrets.token_hex(8)


def process_identity(token: str | None = None) -> dict[str, Any]:
    """This process as a manifest records it: token, pid, host, boot id and start time."""
    pid = os.getpid()
    return {"token": token or new_token(), "pid": pid, "host": socket.gethostname(), "boot_id": _boot_id(),
            "start_ticks": start_ticks(pid), "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def process_alive(entry: Mapping[str, Any]) -> bool | None:
    """Whether the process ``entry`` (:func:`process_identity`) still runs; None when this
    host cannot tell (another host)."""
    if entry.get("host") != socket.gethostname():
        return None
    if entry.get("boot_id") and _boot_id() and entry["boot_id"] != _boot_id():
        return False  # rebooted since
    pid = int(entry.get("pid", -1))
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, another user's
    fields = _stat(pid)
    if fields is not None and fields[0] == "Z":
        return False  # a zombie has finished
    recorded, now = entry.get("start_ticks"), start_ticks(pid)
    return not (recorded is not None and now is not None and int(recorded) != now)


def descendants(pid: int | None = None) -> list[dict[str, Any]]:
    """Every live descendant of ``pid`` (default: this process): pid, start time, command name."""
    root = os.getpid() if pid is None else pid
    children: dict[int, list[int]] = {}
    names: dict[int, str] = {}
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else []:
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:
            continue
        fields = text[text.rfind(")") + 2:].split()
        names[int(entry.name)] = text[text.find("(") + 1:text.rfind(")")]
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [], list(children.get(root, []))
    while todo:
        child = todo.pop()
        found.append({"pid": child, "start_ticks": start_ticks(child), "name": names.get(child, "")})
        todo += children.get(child, [])
    return sorted(found, key=lambda p: p["pid"])


def stop_leftovers(manifest: Mapping[str, Any], *, grace: float = 3.0) -> list[dict[str, Any]]:
    """End the processes a dead run recorded (``helpers``: Ray's) that still run; returns them.

    Only on the run's host and boot, only a process whose id and start time both match the
    record (a reused id is left alone), and only when the run's own process is gone.
    SIGTERM first, SIGKILL after ``grace`` seconds.
    """
    writer = manifest.get("writer") or {}
    if process_alive(writer) is not False or writer.get("host") != socket.gethostname():
        return []
    if writer.get("boot_id") and writer["boot_id"] != _boot_id():
        return []  # rebooted: the recorded processes are long gone

    def running(procs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [p for p in procs if process_alive({**p, **_here(writer)})]

    alive = running(list(manifest.get("helpers", [])))
    remaining = alive
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 2.0)):
        for proc in remaining:
            try:
                os.kill(int(proc["pid"]), sig)
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.monotonic() + wait
        while (remaining := running(remaining)) and time.monotonic() < deadline:
            time.sleep(0.1)
        if not remaining:
            break
    return alive


def _here(writer: Mapping[str, Any]) -> dict[str, Any]:
    return {"host": writer.get("host"), "boot_id": writer.get("boot_id")}


# --- the run's status --------------------------------------------------------------------


def effective_status(manifest: Mapping[str, Any]) -> str:
    """The run's status, not trusting ``running``: ``interrupted`` when its process is gone.

    A ``running`` manifest whose recorded process (``writer``) no longer runs on this host
    (SIGKILL, crash, reboot) is ``interrupted``; on another host, or for a manifest written
    before processes were recorded, ``running`` stays as written.
    """
    status = str(manifest.get("status"))
    if status == "running" and manifest.get("writer") and process_alive(manifest["writer"]) is False:
        return "interrupted"
    return status


def status_line(manifest: Mapping[str, Any]) -> str:
    """The status for people: ``interrupted (process gone: pid 123 on host)`` when so."""
    status = effective_status(manifest)
    if status != manifest.get("status"):
        writer = manifest["writer"]
        return f"{status} ({GONE}: pid {writer.get('pid')} on {writer.get('host')})"
    if status == "running" and manifest.get("writer") and process_alive(manifest["writer"]) is None:
        return f"running (on {manifest['writer'].get('host')}: cannot check from here)"
    return status


def check_writer(run_dir: Path, token: str, *, finishing: bool = False) -> None:
    """Refuse (:class:`StaleWriter`) unless ``run_dir`` still holds the running run of ``token``."""
    try:
        manifest = json.loads((Path(run_dir) / MANIFEST).read_text())
    except (OSError, ValueError) as err:
        raise StaleWriter(f"{run_dir}: the run folder is gone or unreadable ({err}); not writing") from err
    owner = (manifest.get("writer") or {}).get("token")
    if owner != token:
        raise StaleWriter(f"{run_dir}: the folder now holds another run (writer {owner}, not {token}); not writing")
    if manifest.get("status") != "running" and not finishing:
        raise StaleWriter(f"{run_dir}: the run is {manifest.get('status')}; nothing more is written to it")


def leftover_names(processes: Iterable[Mapping[str, Any]]) -> str:
    return ", ".join(f"{p.get('name')} ({p.get('pid')})" for p in processes)
