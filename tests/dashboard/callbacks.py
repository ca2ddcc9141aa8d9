"""Calls Dash callbacks the way the browser does (POST /_dash-update-component), so tests
exercise the server-side checks (sign-in, roles) and not only the UI."""

from __future__ import annotations

from typing import Any

from dash.dependencies import Input, Output, State


def _dep(d: Any) -> dict[str, str]:
    return {"id": d.component_id, "property": d.component_property}


def call(
    client: Any, io: tuple[Any, ...], values: list[Any], trigger: str
) -> tuple[int, dict[str, Any] | str]:
    """POST one callback: ``io`` is the view's ``*_IO`` tuple, ``values`` the inputs then
    states in order, ``trigger`` the ``id.property`` that changed.  Returns the status code
    and the outputs by ``id.property`` (or the body text when not 200)."""
    outs = [d for d in io if isinstance(d, Output)]
    ins = [d for d in io if isinstance(d, Input)]
    states = [d for d in io if isinstance(d, State)]
    assert len(values) == len(ins) + len(states)
    names = [f"{o.component_id}.{o.component_property}" for o in outs]
    body = {
        # Dash names a multi-output callback "..a.x...b.y.." and a single one "a.x".
        "output": names[0] if len(outs) == 1 else ".." + "...".join(names) + "..",
        "outputs": _dep(outs[0]) if len(outs) == 1 else [_dep(o) for o in outs],
        "inputs": [{**_dep(d), "value": v} for d, v in zip(ins, values, strict=False)],
        "state": [{**_dep(d), "value": v} for d, v in zip(states, values[len(ins) :], strict=True)],
        "changedPropIds": [trigger],
    }
    r = client.post("/_dash-update-component", json=body)
    if r.status_code != 200:
        return r.status_code, r.get_data(as_text=True)
    resp = r.get_json()["response"]
    return 200, {f"{i}.{p}": v for i, props in resp.items() for p, v in props.items()}
