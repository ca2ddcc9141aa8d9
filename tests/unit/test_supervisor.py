"""The supervisor's rules with stand-in processes (the real cluster's restart is
``tests/integration/test_cluster.py``): restart all on a failure, stop on a refused
configuration (exit 2) or after ``max_restarts``, return 0 when all finish."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from dataflows.services.cluster import ClusterPlan, Supervisor, process_command


@dataclass(frozen=True)
class Scripted(ClusterPlan):
    """Each process runs ``code`` (Python) instead of a flow."""

    code: str = ""

    def commands(self) -> list[list[str]]:
        return [[sys.executable, "-c", self.code, str(i)] for i in range(self.processes)]


def _sup(code: str, tmp: Path, **kw: int) -> Supervisor:
    return Supervisor(Scripted(2, (0, 0), tmp, code=code), {}, max_backoff_s=0.05, **kw)


def test_all_finished_is_success(tmp_path: Path) -> None:
    assert _sup("pass", tmp_path).run() == 0


def test_a_refused_configuration_is_not_restarted(tmp_path: Path) -> None:
    sup = _sup("import sys, time; sys.argv[1] == '1' and sys.exit(2); time.sleep(30)", tmp_path)
    assert sup.run() == 2
    assert sup.restarts == 0
    assert all(p.poll() is not None for p in sup.procs), "the other process is stopped"


def test_failures_restart_the_whole_cluster_up_to_the_limit(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    code = (
        "import sys, time\n"
        "if sys.argv[1] == '1': time.sleep(30)\n"
        f"open({str(runs)!r}, 'a').write('x'); raise SystemExit(1)"
    )
    sup = _sup(code, tmp_path, max_restarts=2)
    assert sup.run() == 1
    assert sup.restarts == 2
    assert runs.read_text() == "xxx", "started three times, the last failure ends it"
    assert all(p.poll() is not None for p in sup.procs), "the sleeping process is stopped"


def test_process_commands_with_and_without_recovery() -> None:
    head = [sys.executable, "-m", "bytewax.run"]
    assert process_command(0, "h:1", None, 5, "m:f('x')") == [
        *head,
        "m:f('x')",
        "-w",
        "1",
        "-s",
        "5",
    ]
    assert process_command(1, "h:1;h:2", Path("/r"), 30) == [
        *head, "dataflows.main:get_flow()", "-w", "1", "-i", "1", "-a", "h:1;h:2",
        "-r", "/r", "-b", "0", "-s", "30",
    ]  # fmt: skip
