"""docker-compose.yml cannot run here (no Docker engine): check what can be checked."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml

from dataflows.cli import build_parser
from schemas.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
ENV_EXAMPLE = dict(
    line.split("=", 1)
    for line in (ROOT / ".env.example").read_text().splitlines()
    if line and not line.startswith("#")
)
COMPOSE_KNOBS = {"FRAUD_PROCESSES", "GENERATOR_RATE", "CLICKHOUSE_PASSWORD"}


def _services():
    return COMPOSE["services"].items()


@pytest.mark.parametrize(("name", "svc"), list(_services()), ids=[n for n, _ in _services()])
def test_images_are_pinned(name: str, svc: dict) -> None:
    image = svc["image"]
    assert ":" in image and not image.endswith(":latest"), f"{name}: pin {image!r}"


def test_clickhouse_is_pinned_to_26() -> None:
    assert COMPOSE["services"]["clickhouse"]["image"].startswith("clickhouse/clickhouse-server:26.")


def test_every_fraud_variable_is_a_setting() -> None:
    fields = {f"FRAUD_{k.upper()}" for k in Settings.model_fields}
    text = (ROOT / "docker-compose.yml").read_text()
    used = set(re.findall(r"\bFRAUD_[A-Z0-9_]+", text)) | set(ENV_EXAMPLE)
    unknown = {v for v in used if v.startswith("FRAUD_")} - fields - COMPOSE_KNOBS
    assert not unknown, f"not settings: {sorted(unknown)}"
    assert fields <= set(ENV_EXAMPLE), f".env.example lacks {sorted(fields - set(ENV_EXAMPLE))}"


def test_env_example_values_are_valid_settings() -> None:
    values = {
        k.removeprefix("FRAUD_").lower(): v
        for k, v in ENV_EXAMPLE.items()
        if k.startswith("FRAUD_") and k not in COMPOSE_KNOBS
    }
    Settings(**values)  # raises naming the field if a value is invalid


def test_host_ports_do_not_clash() -> None:
    ports = [p.split(":")[0] for _, svc in _services() for p in svc.get("ports", [])]
    assert len(ports) == len(set(ports)), ports


def test_depends_on_names_existing_services() -> None:
    names = set(COMPOSE["services"])
    for name, svc in _services():
        assert set(svc.get("depends_on", {})) <= names, name


def _commands() -> list[tuple[str, list[str]]]:
    out = []
    for name, svc in _services():
        cmd = svc.get("command")
        if isinstance(cmd, list) and cmd[:2] == ["sh", "-c"]:
            cmd = shlex.split(cmd[2].replace("$$", "$"))
        if isinstance(cmd, list):
            out.append((name, cmd))
    return out


def test_commands_exist_in_the_project() -> None:
    sub = next(a for a in build_parser()._actions if a.dest == "cmd")
    checked = 0
    for name, cmd in _commands():
        for i, word in enumerate(cmd):
            if word == "fraud":
                assert cmd[i + 1] in sub.choices, f"{name}: fraud {cmd[i + 1]} does not exist"
                checked += 1
            if word == "bytewax.run":
                module, func = cmd[i + 1].removesuffix("()").split(":")
                mod = __import__(module, fromlist=[func])
                assert callable(getattr(mod, func)), f"{name}: {cmd[i + 1]}"
                checked += 1
    assert checked >= 3
