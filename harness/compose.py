"""Compose files read as docker compose reads them: variable substitution, without a Docker engine."""

from __future__ import annotations

import re
from collections.abc import Mapping

_VARIABLE = re.compile(r"\$\$|\$\{(?P<braced>[A-Za-z_]\w*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}|\$(?P<plain>[A-Za-z_]\w*)")


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """Compose's variable substitution: $$, $VAR, ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}."""

    def substitute(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group("braced") or m.group("plain")
        op, arg, value = m.group("op"), m.group("arg"), env.get(name)
        assert arg is None or "$" not in arg, f"nested substitution is not supported here: {m.group(0)}"
        unset = value is None or (value == "" and op and op.startswith(":"))
        if op in (":-", "-"):
            return arg if unset else value
        if op in (":?", "?") and unset:
            raise ValueError(f"{name}: {arg}")
        return value or ""

    return _VARIABLE.sub(substitute, text)


def resolve_variables(node, env: Mapping[str, str]):
    """Every string in a parsed YAML document interpolated against `env`."""
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [resolve_variables(item, env) for item in node]
    if isinstance(node, dict):
        return {key: resolve_variables(value, env) for key, value in node.items()}
    return node
