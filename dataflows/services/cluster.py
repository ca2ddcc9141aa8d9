"""A supervised bytewax cluster on one machine: ``fraud cluster --processes N``.

bytewax runs a multi-process flow as N processes that connect to each other
(``-i INDEX -a "host:port;host:port"``, one worker each here).  Once connected they
depend on each other: when one dies the others panic (``Send thread panic``) within
seconds, and the cluster only comes back when *every* process restarts on the same
recovery directory.  This supervisor is that rule, automated: it starts the N processes,
and when any of them exits it stops the rest and starts all N again (after a short,
growing pause), resuming from the last snapshot.  Two exceptions end it instead: a
process that exits 2 refused its configuration (a restart cannot help), and a plan's
``max_restarts`` (``fraud backfill``'s 3).  SIGTERM / Ctrl-C stop them all and return.

The same rule holds on Kubernetes (docs/scaling.md): one StatefulSet whose pods restart
together, e.g. a liveness probe failing the whole set, or this supervisor as the pod's
entry with N processes per pod.

Addresses are ``;``-separated (a comma makes one process exit and the others hang).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from schemas.errors import ConfigError
from schemas.settings import Settings, settings_env

__all__ = ["ClusterPlan", "Supervisor", "addresses", "process_command", "process_env"]

log = logging.getLogger(__name__)
FLOW = "dataflows.main:get_flow()"


def addresses(ports: Sequence[int], host: str = "127.0.0.1") -> str:
    """bytewax's ``-a`` value: ``host:port`` per process, separated by ``;``.

    >>> addresses([2101, 2102])
    '127.0.0.1:2101;127.0.0.1:2102'
    """
    return ";".join(f"{host}:{p}" for p in ports)


def process_command(
    index: int, addrs: str, recovery: Path | None, snapshot_s: int, flow: str = FLOW
) -> list[str]:
    """The command line of cluster process ``index`` (one worker per process: a process
    per core scales; threads in one process share the GIL)."""
    cmd = [sys.executable, "-m", "bytewax.run", flow, "-w", "1"]
    if ";" in addrs:
        cmd += ["-i", str(index), "-a", addrs]
    if recovery is not None:
        cmd += ["-r", str(recovery), "-b", "0"]
    return [*cmd, "-s", str(int(snapshot_s))]  # bytewax takes whole seconds


@dataclass(frozen=True)
class ClusterPlan:
    """What to run: N processes on these ports, one recovery directory."""

    processes: int
    ports: tuple[int, ...]
    recovery: Path | None
    snapshot_s: int = 10
    host: str = "127.0.0.1"
    flow: str = FLOW

    def commands(self) -> list[list[str]]:
        addrs = addresses(self.ports, self.host)
        return [
            process_command(i, addrs, self.recovery, self.snapshot_s, self.flow)
            for i in range(self.processes)
        ]


def init_recovery(recovery: Path, partitions: int) -> None:
    """Create the recovery partitions once (an existing directory is resumed)."""
    if (recovery / "part-0.sqlite3").exists() or any(recovery.glob("*.sqlite3")):
        return
    recovery.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "bytewax.recovery", str(recovery), str(partitions)],
        check=True,
        capture_output=True,
    )


@dataclass
class Supervisor:
    """Runs :class:`ClusterPlan` and restarts the whole cluster when any process ends.

    A process that exits 2 refused its configuration: restarting cannot help, so the
    cluster stops with that status; so it does after ``max_restarts`` (None: no limit).
    """

    plan: ClusterPlan
    env: dict[str, str]
    max_backoff_s: float = 30.0
    max_restarts: int | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    restarts: int = 0
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def _start(self) -> None:
        self.procs = [
            subprocess.Popen(cmd, env=self.env, start_new_session=True)
            for cmd in self.plan.commands()
        ]
        log.info("cluster: started %d processes %s", len(self.procs), [p.pid for p in self.procs])

    def _stop_all(self, grace_s: float = 10.0) -> None:
        for p in self.procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for p in self.procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()

    def run(self) -> int:
        """Supervise until :attr:`stop` is set or every process finished its input: 0;
        2 when a process refused its configuration, 1 after ``max_restarts``."""
        backoff = min(1.0, self.max_backoff_s)
        while not self.stop.is_set():
            self._start()
            started = time.monotonic()
            while not self.stop.wait(0.2):
                codes = [p.poll() for p in self.procs]
                if all(c == 0 for c in codes):
                    log.info("cluster: every process finished its input")
                    return 0
                if any(c not in (None, 0) for c in codes):
                    break
            if self.stop.is_set():
                break
            failed = {p.pid: p.poll() for p in self.procs if p.poll() not in (None, 0)}
            if 2 in failed.values() or (
                self.max_restarts is not None and self.restarts >= self.max_restarts
            ):
                log.error("cluster: process(es) ended %s; stopping all", failed)
                self._stop_all()
                return 2 if 2 in failed.values() else 1
            log.warning("cluster: process(es) ended %s; restarting all %d", failed, len(self.procs))
            self._stop_all()
            self.restarts += 1
            if time.monotonic() - started > 60:
                backoff = min(1.0, self.max_backoff_s)  # it ran a while: not a crash loop
            self.stop.wait(backoff)
            backoff = min(self.max_backoff_s, backoff * 2)
        self._stop_all()
        return 0


def process_env(s: Settings) -> dict[str, str]:
    """The environment of a flow process: this one's, with ``s`` as ``FRAUD_*``."""
    return {**os.environ, **settings_env(s.model_dump())}


def free_ports(n: int) -> tuple[int, ...]:
    from dataflows.connectors.embedded import free_port

    return tuple(free_port() for _ in range(n))


def run_cluster(s: Settings, processes: int, snapshot_s: int, base_port: int | None) -> int:
    """``fraud cluster``: N supervised processes on this machine, recovery always on."""
    if s.recovery_dir is None:
        raise ConfigError(
            "recovery_dir (FRAUD_RECOVERY_DIR) must be set: a cluster restarts from its snapshots"
        )
    if processes > 1 and s.clickhouse_url.startswith("chdb:"):
        raise ConfigError(
            "clickhouse_url (FRAUD_CLICKHOUSE_URL): chDB allows one process per directory; "
            "a cluster of several processes needs a ClickHouse server (http://...)"
        )
    ports = tuple(base_port + i for i in range(processes)) if base_port else free_ports(processes)
    init_recovery(s.recovery_dir, max(processes, 1))
    plan = ClusterPlan(processes, ports, s.recovery_dir, snapshot_s)
    sup = Supervisor(plan, process_env(s))
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: sup.stop.set())
    return sup.run()
