"""The production entry takes its recovery from bytewax's own command line, so offsets
are never resumed without the per-user state and models they belong to."""

from __future__ import annotations

from pathlib import Path

import pytest

from dataflows.main import bytewax_recovery_dir, with_running_recovery
from schemas.errors import ConfigError
from schemas.settings import load_settings


def test_bytewax_flags_and_variable_are_read_like_bytewax_reads_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    argv = ["dataflows.main:get_flow()", "-r", "/data/rec", "-s", "10", "-b", "0", "-w", "2"]
    assert bytewax_recovery_dir(argv) == Path("/data/rec")
    assert bytewax_recovery_dir(["dataflows.main:get_flow()", "--recovery-directory=/x"]) == Path(
        "/x"
    )
    assert bytewax_recovery_dir(["dataflows.main:get_flow()"]) is None
    monkeypatch.setenv("BYTEWAX_RECOVERY_DIRECTORY", "/from/env")
    assert bytewax_recovery_dir(["dataflows.main:get_flow()"]) == Path("/from/env")


def test_running_recovery_turns_snapshots_on_without_the_variable(tmp_path: Path) -> None:
    s = with_running_recovery(load_settings(), tmp_path)
    assert s.recovery_dir == tmp_path


def test_same_directory_twice_is_fine_a_different_one_or_none_is_refused(tmp_path: Path) -> None:
    s = load_settings(recovery_dir=str(tmp_path))
    assert with_running_recovery(s, tmp_path / ".").recovery_dir == tmp_path
    with pytest.raises(ConfigError, match=r"-r .*other"):
        with_running_recovery(s, tmp_path / "other")
    with pytest.raises(ConfigError, match="without recovery"):
        with_running_recovery(s, None)
    assert with_running_recovery(load_settings(), None).recovery_dir is None
