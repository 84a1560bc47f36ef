"""Processes started by PID, stopped by PID: a group that leaves nothing behind.

Generic process bookkeeping for :mod:`flwr_multilevel.deploy.federation`: start
commands in their own sessions, record their PIDs, wait until they are ready,
and stop them and everything they spawned (Linux ``/proc``) on success, error,
Ctrl-C and SIGTERM.
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from logging import INFO, WARNING
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

from flwr.common.logger import log

READY_S = 300.0  # seconds a process gets to come up (deploy.start_timeout's default)
STOP_GRACE_S = 5.0  # seconds between SIGTERM and SIGKILL
BIN = Path(sys.executable).parent


class DeploymentError(RuntimeError):
    """A process failed to start or to become ready."""


def executable(name: str) -> str:
    """Return the path of Flower's ``name`` command: beside this Python, else on PATH.

    Raises
    ------
    DeploymentError
        If it is in neither place.
    """
    beside = BIN / name
    if beside.is_file():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise DeploymentError(f"{name}: not found beside {sys.executable} or on PATH")
    return found


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that is free on ``host`` right now.

    Examples
    --------
    >>> 0 < free_port() < 65536
    True
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def pid_alive(pid: int) -> bool:
    """Return whether process ``pid`` runs (a zombie, exited but not reaped, does not).

    Examples
    --------
    >>> pid_alive(os.getpid())
    True
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def descendants(pid: int) -> list[int]:
    """Return the PIDs of every process below ``pid`` (Linux ``/proc``; empty elsewhere)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            ppid = int(entry.joinpath("stat").read_text().rsplit(")", 1)[-1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def start_time(pid: int) -> int | None:
    """Return when process ``pid`` started (clock ticks since boot; None if it is gone).

    With its PID it names one process: a PID alone may be reused after it exits.

    Examples
    --------
    >>> start_time(os.getpid()) == start_time(os.getpid()) is not None
    True
    """
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def _signal(pids: Sequence[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def _wait_gone(pids: Sequence[int], seconds: float) -> list[int]:
    deadline = time.monotonic() + seconds
    while True:
        alive = [p for p in pids if pid_alive(p)]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.05)


@dataclass
class ProcessGroup:
    """Every process a deployment started, by PID; a context manager that stops them all.

    Leaving the ``with`` block (normally, by an exception, by Ctrl-C, or by
    SIGTERM, which it turns into ``SystemExit``) stops the processes: SIGTERM
    to every recorded PID and every process below it, ``STOP_GRACE_S`` seconds,
    then SIGKILL to what still runs.

    Parameters
    ----------
    env : dict[str, str] (default: {})
        Extra environment of every process started.

    Examples
    --------
    >>> with ProcessGroup() as group:
    ...     proc = group.start("sleeper", ["sleep", "30"])
    >>> pid_alive(proc.pid)
    False
    """

    env: dict[str, str] = field(default_factory=dict)
    procs: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)
    logs: list[Any] = field(default_factory=list)
    seen: dict[int, int] = field(default_factory=dict)  # pid -> start time, see track()
    _old_sigterm: Any = None

    @property
    def pids(self) -> list[int]:
        """PIDs of every process started, in start order."""
        return [proc.pid for _, proc in self.procs]

    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        log_path: str | Path | None = None,
        cwd: str | Path | None = None,
        stdin: Any = subprocess.DEVNULL,
    ) -> "subprocess.Popen[bytes]":
        """Start ``argv`` in its own session, stdout+stderr to ``log_path``; return it.

        ``stdin`` is nothing by default (``subprocess.PIPE``: the caller writes it).
        """
        out: Any = subprocess.DEVNULL
        if log_path is not None:
            Path(log_path).parent.mkdir(parents=True, exist_ok=True)
            out = open(log_path, "ab")  # noqa: SIM115 (closed in stop())
            self.logs.append(out)
        full_env = {**os.environ, **self.env, **(env or {})}
        full_env["PATH"] = f"{BIN}{os.pathsep}{full_env.get('PATH', '')}"
        proc = subprocess.Popen(
            list(argv),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=stdin,
            env=full_env,
            cwd=cwd,
            start_new_session=True,
        )
        self.procs.append((name, proc))
        log(INFO, "started %s (pid %s)", name, proc.pid)
        return proc

    def track(self) -> None:
        """Remember every process now below the recorded ones, to stop it even if orphaned.

        A process whose parent dies (a SuperLink killed under its SuperExec and
        ServerApp) is no longer below anything recorded; :meth:`stop` stops it
        all the same if it still runs (the same PID and start time).
        """
        for root in [proc.pid for _, proc in self.procs if proc.poll() is None]:
            for pid in descendants(root):
                if pid not in self.seen and (started := start_time(pid)) is not None:
                    self.seen[pid] = started

    def stop(self) -> None:
        """Stop every process started and everything below it; wait until they are gone.

        All recorded processes, every process below them and every process
        :meth:`track` saw below them that still runs get SIGTERM at once (so
        they shut down in parallel); whatever still runs after
        ``STOP_GRACE_S`` seconds gets SIGTERM again and then SIGKILL.
        """
        running = [proc.pid for _, proc in reversed(self.procs) if proc.poll() is None]
        below = [pid for root in running for pid in descendants(root)]
        orphans = [p for p, t in self.seen.items() if p not in below and start_time(p) == t]
        everyone = [*running, *below, *orphans]
        # the SuperExecs run in their own sessions and can outlive their parent: signal all
        _signal(everyone, signal.SIGTERM)
        self._reap(STOP_GRACE_S)
        alive = _wait_gone(everyone, STOP_GRACE_S)
        if alive:
            log(WARNING, "processes %s still run after SIGTERM; stopping them", alive)
            _signal(alive, signal.SIGTERM)
            alive = _wait_gone(alive, STOP_GRACE_S)
            _signal(alive, signal.SIGKILL)
            alive = _wait_gone(alive, STOP_GRACE_S)
        self._reap(STOP_GRACE_S)
        if alive:
            log(WARNING, "processes %s did not exit", alive)
        for file in self.logs:
            file.close()
        self.logs.clear()

    def _reap(self, seconds: float) -> None:
        """Wait (up to ``seconds`` in all) for the recorded processes, reaping them."""
        deadline = time.monotonic() + seconds
        for _, proc in self.procs:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass

    def _on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    def __enter__(self) -> "ProcessGroup":
        try:
            self._old_sigterm = signal.signal(signal.SIGTERM, self._on_sigterm)
        except ValueError:  # not the main thread: leave SIGTERM alone
            self._old_sigterm = None
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            old_sigint = signal.signal(signal.SIGINT, signal.SIG_IGN)  # a 2nd Ctrl-C waits
        except ValueError:  # not the main thread
            old_sigint = None
        try:
            self.stop()
        finally:
            if old_sigint is not None:
                signal.signal(signal.SIGINT, old_sigint)
            if self._old_sigterm is not None:
                signal.signal(signal.SIGTERM, self._old_sigterm)


def wait_for_port(
    host: str, port: int, proc: "subprocess.Popen[bytes]", timeout: float = READY_S
) -> None:
    """Return once ``host:port`` accepts TCP connections.

    Raises
    ------
    DeploymentError
        If ``proc`` exits first or ``timeout`` seconds pass.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise DeploymentError(f"pid {proc.pid} exited with {proc.returncode} before {port}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise DeploymentError(f"nothing listens on {host}:{port} after {timeout:.0f} s")


def wait_for_log(
    path: str | Path, pattern: str, proc: "subprocess.Popen[bytes]", timeout: float = READY_S
) -> str:
    """Return the first line of the log at ``path`` matching ``pattern`` (regex).

    Raises
    ------
    DeploymentError
        If ``proc`` exits first or ``timeout`` seconds pass.
    """
    regex = re.compile(pattern)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = Path(path).read_text(errors="replace") if Path(path).exists() else ""
        for line in text.splitlines():
            if regex.search(line):
                return line
        if proc.poll() is not None:
            tail = " | ".join(text.strip().splitlines()[-3:])
            raise DeploymentError(f"pid {proc.pid} exited with {proc.returncode}: {tail}")
        time.sleep(0.1)
    raise DeploymentError(f"no line matching {pattern!r} in {path} after {timeout:.0f} s")
