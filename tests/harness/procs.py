"""Starting and stopping the control-plane processes by process group, never by name.

Each component runs in its own session (hence its own process group) with stdout and stderr in a log
file. A reaper process (see `reaper.py`) kills the groups if this Python process dies first, and an
atexit hook stops them on a normal interpreter exit.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO

from torchjob_cli import procs as cli_procs

STOP_GRACE_S = 10.0


@dataclass
class Component:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def exit_reason(self) -> str | None:
        return None if self.alive() else "exited"

    def failure(self, message: str) -> ComponentFailedError:
        return ComponentFailedError(self, message)

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


class ComponentFailedError(RuntimeError):
    """A component exited or never became ready; the message ends with the tail of its log."""

    def __init__(self, component: Component, what: str) -> None:
        status = "running" if component.alive() else f"exited with {component.popen.returncode}"
        super().__init__(
            f"{component.name} {what} ({status}); log {component.log_path}, last lines:\n"
            f"{component.log_tail()}"
        )
        self.component = component


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def stop_on_signals() -> None:
    """For the `up` commands: SIGTERM stops like Ctrl-C, and Ctrl-C works however the command was
    started (a shell without job control starts background commands with SIGINT ignored, and Python
    then keeps it ignored)."""
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)


def watch_until_interrupted(components: Callable[[], Iterable[Component]]) -> int:
    """For the `up` commands: 1 as soon as a component exits, 0 on Ctrl-C (the caller stops everything)."""
    try:
        while True:
            for component in components():
                if not component.alive():
                    print(str(ComponentFailedError(component, "stopped")), file=sys.stderr)
                    return 1
            time.sleep(1)
    except KeyboardInterrupt:
        print("\nstopping ...", file=sys.stderr)
        return 0


class Supervisor:
    """Owns the processes of one control plane; `stop_all` ends them in reverse start order."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.components: list[Component] = []
        self._reaper = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("reaper.py"))],
            stdin=subprocess.PIPE,
            start_new_session=True,
        )
        atexit.register(self.stop_all)

    def start(self, name: str, argv: Sequence[str | Path], env: dict[str, str] | None = None) -> Component:
        log_path = self.log_dir / f"{name}.log"
        with log_path.open("ab") as log:
            popen = subprocess.Popen(
                [str(a) for a in argv],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # own process group: one killpg reaches any children too
            )
        component = Component(name, popen, log_path)
        self.components.append(component)
        self._tell_reaper(f"+{popen.pid}")
        return component

    def stop(self, component: Component, grace_s: float = STOP_GRACE_S) -> None:
        if component.alive():
            _signal_group(component.pid, signal.SIGTERM)
            try:
                component.popen.wait(grace_s)
            except subprocess.TimeoutExpired:
                _signal_group(component.pid, signal.SIGKILL)
                component.popen.wait()
        # Kill leftovers in the group (if any) before the pid can be reused.
        _signal_group(component.pid, signal.SIGKILL)
        self._tell_reaper(f"-{component.pid}")

    def restart(self, component: Component) -> Component:
        """Stops a component and starts it again with the same command line, in its place in stop order."""
        argv = component.popen.args
        assert isinstance(argv, list), argv  # start() passes a list
        self.stop(component)
        fresh = self.start(component.name, argv)
        self.components.remove(fresh)
        self.components[self.components.index(component)] = fresh
        return fresh

    def stop_all(self) -> None:
        while self.components:
            self.stop(self.components.pop())
        stdin = self._reaper.stdin
        if stdin is not None and not stdin.closed:
            stdin.close()
            self._reaper.wait(STOP_GRACE_S)
        atexit.unregister(self.stop_all)

    def _tell_reaper(self, line: str) -> None:
        stdin: IO[bytes] | None = self._reaper.stdin
        if stdin is not None and not stdin.closed:
            stdin.write(line.encode() + b"\n")
            stdin.flush()


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def process_tree(root: int) -> list[int]:
    """root and every descendant, from /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo += children.get(pid, [])
    return tree


def kill_tree(root: int) -> None:
    """SIGKILL root and every descendant, frozen first so none can start more. torchrun starts its
    workers in sessions of their own, so killing a process group would miss them. The processes that
    unlink the shared memory their dead clients leave in the host's /dev/shm go last, as `torchjob run`
    kills them (`torchjob_cli.procs`): they outlive their parents, so they are found first."""
    cleaners = [pid for pid in process_tree(root) if cli_procs.cleans_up(pid)]
    for sig in (signal.SIGSTOP, signal.SIGKILL):
        for pid in process_tree(root):
            if pid not in cleaners:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, sig)
    # cleans_up is false once the process is gone, a zombie (no cmdline) or its pid another's.
    deadline = time.monotonic() + cli_procs.CLEANUP_SECONDS
    while any(cli_procs.cleans_up(pid) for pid in cleaners) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in cleaners:
        if cli_procs.cleans_up(pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
