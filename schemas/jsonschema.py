"""JSON Schema export of the public contracts, committed under ``schemas/json/``.

``python -m schemas.jsonschema`` rewrites the files; ``--check`` fails if they differ
from the models (CI runs the check through the test suite).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from schemas.fields import json_schema_for
from schemas.scored import (
    ALERT_SPECS,
    ALERT_V1_SPECS,
    ALERT_V2_SPECS,
    ALERT_VERSION,
    DECISION_SPECS,
    DECISION_VERSION,
    REVIEW_SPECS,
    REVIEW_V1_SPECS,
    REVIEW_VERSION,
)
from schemas.transaction import (
    LABEL_SPECS,
    TRANSACTION_SPECS,
    TRANSACTION_V1_SPECS,
    TRANSACTION_VERSION,
)

__all__ = ["SCHEMA_DIR", "all_schemas", "write_schemas"]

SCHEMA_DIR = Path(__file__).parent / "json"


def _transaction(version: int = TRANSACTION_VERSION) -> dict[str, Any]:
    specs = TRANSACTION_SPECS if version == TRANSACTION_VERSION else TRANSACTION_V1_SPECS
    doc = json_schema_for("Transaction", version, specs)
    label = json_schema_for("Label", 1, LABEL_SPECS)
    doc["properties"]["label"] = {
        "anyOf": [
            {k: label[k] for k in ("type", "required", "properties", "additionalProperties")},
            {"type": "null"},
        ],
        "description": "Ground truth from generators and datasets; scoring never reads it.",
    }
    return doc


def all_schemas() -> dict[str, dict[str, Any]]:
    """File name → schema document, for every public contract."""
    return {
        "transaction-v1.json": _transaction(1),
        f"transaction-v{TRANSACTION_VERSION}.json": _transaction(),
        "alert-v1.json": json_schema_for("Alert", 1, ALERT_V1_SPECS),
        "alert-v2.json": json_schema_for("Alert", 2, ALERT_V2_SPECS),
        f"alert-v{ALERT_VERSION}.json": json_schema_for("Alert", ALERT_VERSION, ALERT_SPECS),
        "review-v1.json": json_schema_for("Review", 1, REVIEW_V1_SPECS),
        f"review-v{REVIEW_VERSION}.json": json_schema_for("Review", REVIEW_VERSION, REVIEW_SPECS),
        f"decision-v{DECISION_VERSION}.json": json_schema_for(
            "Decision", DECISION_VERSION, DECISION_SPECS
        ),
    }


def render(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2, sort_keys=False) + "\n"


def write_schemas(directory: Path = SCHEMA_DIR, check: bool = False) -> list[str]:
    """Write (or with ``check`` compare) the schema files; returns the names that differ."""
    directory.mkdir(parents=True, exist_ok=True)
    stale = []
    for name, doc in all_schemas().items():
        path = directory / name
        text = render(doc)
        if not path.exists() or path.read_text() != text:
            stale.append(name)
            if not check:
                path.write_text(text)
    return stale


if __name__ == "__main__":
    check = "--check" in sys.argv[1:]
    diff = write_schemas(check=check)
    if check and diff:
        print(f"JSON Schemas out of date: {diff}; run python -m schemas.jsonschema")
        sys.exit(1)
    print("up to date" if not diff else f"wrote {diff}")
