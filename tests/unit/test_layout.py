"""The layout the README promises: rooms by concern, and nobody but settings reads the
environment.  The import direction itself is checked by ``lint-imports`` (pyproject)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("schemas", "generators", "clickhouse", "dash_app", "dataflows")


def test_dataflows_top_level_holds_only_flow_main_and_subpackages() -> None:
    top = ROOT / "dataflows"
    modules = sorted(p.name for p in top.glob("*.py"))
    assert modules == ["__init__.py", "flow.py", "main.py"]
    subpackages = sorted(p.parent.name for p in top.glob("*/__init__.py"))
    assert subpackages == [
        "api",
        "bench",
        "cli",
        "connectors",
        "detection",
        "evaluation",
        "services",
    ]


def _reads_env(tree: ast.AST) -> list[int]:
    lines = []
    for node in ast.walk(tree):
        is_os_attr = (
            isinstance(node, ast.Attribute)
            and node.attr in ("environ", "getenv", "environb")
            and isinstance(node.value, ast.Name)
            and node.value.id == "os"
        )
        is_os_import = (
            isinstance(node, ast.ImportFrom)
            and node.module == "os"
            and any(a.name in ("environ", "getenv") for a in node.names)
        )
        if is_os_attr or is_os_import:
            lines.append(node.lineno)
    return lines


def test_only_settings_read_the_environment() -> None:
    """Every tunable goes through schemas.settings (validated, listed by `fraud settings`);
    passing the environment on to a child process is the one other use allowed."""
    allowed = {
        # hands the settings to a `python -m bytewax.run` child as FRAUD_* variables
        "dataflows/bench/latency.py",
        "dataflows/bench/api.py",
        # the scale-out legs' cluster processes (and their pickle counters)
        "dataflows/bench/flow.py",
        # starts the cluster's bytewax processes with the settings as FRAUD_* variables
        "dataflows/services/cluster.py",
    }
    offenders = []
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            rel = path.relative_to(ROOT).as_posix()
            if rel == "schemas/settings.py" or rel in allowed:
                continue
            hits = _reads_env(ast.parse(path.read_text(), rel))
            offenders += [f"{rel}:{n}" for n in hits]
    assert offenders == []
