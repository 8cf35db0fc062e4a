"""docs/CONFIG.md, written from the config dataclasses themselves.

Every key of an experiment file is a field of :class:`~bflsim.config.ExperimentConfig` or of
one of its sections; its type and default come from the dataclass, its meaning from the
section's docstring and the comment lines just above the field. ``bflsim config-reference``
prints the page; a test keeps docs/CONFIG.md equal to it, so the reference cannot drift from
the code.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import sys
import typing
from typing import Any, Literal

from bflsim.config.experiment import ExperimentConfig

PREAMBLE = """\
# Experiment configuration reference

Generated from the config dataclasses (`bflsim config-reference > docs/CONFIG.md`); a test
fails when this page and the code disagree. An experiment is a TOML file under
`experiments/`; every key below can also be set on the command line with
`--set section.key=value` (e.g. `--set federation.rounds=3`). An unknown key or an
impossible value is refused before anything runs, with a sentence naming the key.

Which datasets, models, attacks and defences exist, with their parameters, defaults and
papers: `bflsim list`. A rule's or an attack's own parameters go in its `params` table
(`[aggregator.params]`, `[attack.params]`).

## Several runs in one file

- `[[scenarios]]`: named settings of one experiment, run one after the other (paper
  Table 4). Each has `name` and `set`, a table of dotted keys:
  `[[scenarios]]` / `name = "krum"` / `set = { "aggregator.name" = "krum" }`.
- `[sweep]`: `grid` is a product over its keys, `zip` walks its lists together:
  `grid = { "attack.fraction" = [0.0, 0.2] }`, `zip = { "train.seed" = [1, 2, 3] }`. A grid
  axis may set a whole table (`"aggregator" = [{ name = "krum" }, ...]`). `[[sweep]]`, an
  array of tables, runs several grids one after the other.
- A file gives `[[scenarios]]` or a sweep, not both. Runs resume: a finished point whose
  recorded config equals the current one is skipped, any other is run again.
"""


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return " \\| ".join(f'`"{v}"`' if isinstance(v, str) else f"`{v}`" for v in typing.get_args(annotation))
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return " or ".join(_type_name(a) for a in typing.get_args(annotation))
    if origin is tuple:
        args = typing.get_args(annotation)
        inner = _type_name(args[0]) if args else "value"
        return f"list of {inner}"
    if origin is not None:
        return getattr(origin, "__name__", str(origin))
    if annotation is type(None):
        return "none"
    return {"str": "string", "int": "integer", "float": "number", "bool": "boolean"}.get(
        getattr(annotation, "__name__", str(annotation)), getattr(annotation, "__name__", str(annotation)))


def _default_text(field: dataclasses.Field) -> str:
    if field.default is not dataclasses.MISSING:
        value = field.default
    elif field.default_factory is not dataclasses.MISSING:
        value = field.default_factory()
    else:
        return "(required)"
    if value is None:
        return "unset"
    if isinstance(value, str):
        return f'`"{value}"`'
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, tuple):
        return "`[" + ", ".join(f'"{v}"' if isinstance(v, str) else str(v) for v in value) + "]`"
    if isinstance(value, dict):
        return "`{}`" if not value else f"`{dict(value)}`"
    return f"`{value}`"


def _field_comments(cls: type) -> dict[str, str]:
    """The comment lines just above each field in the class's source."""
    lines = inspect.getsource(cls).splitlines()
    comments: dict[str, str] = {}
    pending: list[str] = []
    for line in lines:
        text = line.strip()
        if text.startswith("#"):
            pending.append(text.lstrip("#").strip())
            continue
        name = text.split(":", 1)[0].strip()
        if ":" in text and name.isidentifier() and pending:
            comments[name] = " ".join(pending)
        pending = []
    return comments


def _docstring(cls: type) -> str:
    text = inspect.cleandoc(cls.__doc__ or "").replace("``", "`")
    return re.sub(r":\w+:`~?([^`]+)`", r"`\1`", text)  # Sphinx roles -> code


def _section(cls: type, prefix: str) -> list[str]:
    hints = typing.get_type_hints(cls, vars(sys.modules[cls.__module__]))
    comments = _field_comments(cls)
    out = [f"## `[{prefix}]`" if prefix else "## Top level", "", _docstring(cls), "",
           "| key | type | default | notes |", "|---|---|---|---|"]
    nested = []
    for field in dataclasses.fields(cls):
        if not field.init:
            continue
        annotation = hints[field.name]
        optional = [a for a in typing.get_args(annotation) if dataclasses.is_dataclass(a)]
        if dataclasses.is_dataclass(annotation) or optional:  # a section (an optional one: off unless given)
            nested.append(((optional or [annotation])[0], f"{prefix}.{field.name}" if prefix else field.name))
            continue
        key = f"{prefix}.{field.name}" if prefix else field.name
        note = comments.get(field.name, "").replace("|", "\\|")
        out.append(f"| `{key}` | {_type_name(annotation)} | {_default_text(field)} | {note} |")
    out.append("")
    for sub, name in nested:
        out += _section(sub, name)
    return out


def config_reference() -> str:
    """The whole page, in Markdown."""
    return PREAMBLE + "\n" + "\n".join(_section(ExperimentConfig, "")).rstrip() + "\n"
