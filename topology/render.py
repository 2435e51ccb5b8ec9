"""Generated YAML files, written one way: a comment header, block style for long text."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import yaml


class _Dumper(yaml.SafeDumper):
    """Multi-line strings as literal blocks (`|`), readable in a diff."""


def _text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _text)


def yaml_documents(documents: Sequence[Any], header: str) -> str:
    """Documents as one YAML stream (`---` between them), after a comment header."""
    body = yaml.dump_all(documents, Dumper=_Dumper, sort_keys=False, width=100)
    return "".join(f"# {line}\n" if line else "#\n" for line in header.splitlines()) + body
