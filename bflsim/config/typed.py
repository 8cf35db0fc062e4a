"""TOML tables to frozen dataclasses: type checks and coercion that name the key.

:func:`build` turns a table into a dataclass, refusing unknown keys and values of the wrong
type with a sentence naming the dotted key; :func:`build_record` does the same for the
parameters of a rule or attack record (``[aggregator.params]``, ``[attack.params]``).
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any, Literal, get_args, get_origin


class ConfigError(ValueError):
    """A configuration value is missing, unknown or impossible; the message names the key."""


class Params(dict):
    """The parameters of a rule or an attack as the experiment gives them: frozen, hashable.

    Lists become tuples. Which keys are valid is the record's business
    (:func:`build_record`), not this mapping's.
    """

    def __init__(self, items: Mapping[str, Any] | Iterable[tuple[str, Any]] = (), **more: Any) -> None:
        super().__init__({str(k): _freeze(v) for k, v in dict(items, **more).items()})

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(tuple(sorted(self.items())))

    def __reduce__(self) -> tuple:
        return (Params, (dict(self),))

    def _refuse(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("Params are frozen; build a new Params instead")

    __setitem__ = __delitem__ = update = pop = popitem = clear = setdefault = _refuse  # type: ignore[assignment]


def _freeze(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, dict):
        return Params(value)
    return value


def build(cls: type, raw: Any, prefix: str) -> Any:
    """``cls(**raw)`` with every value coerced to its field's type; ``prefix`` names the table."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'} must be a table")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"unknown key {prefix + unknown[0]!r}; expected one of {sorted(known)}")
    values = {name: coerce(hints[name], value, f"{prefix}{name}") for name, value in raw.items()}
    return cls(**values)


def build_record(
    cls: type, params: Mapping[str, Any], prefix: str, errors: type[Exception], **fixed: Any
) -> Any:
    """The record ``cls(**params, **fixed)``; ``prefix`` (e.g. ``"attack.params"``) names the keys.

    ``fixed`` are set by the config elsewhere (a rule's ``num_malicious``) and may not be
    given as parameters. A value the record refuses (``errors``, whose messages start with
    the parameter's name) becomes a :class:`ConfigError` naming ``prefix.<parameter>``.
    """
    takes = sorted({f.name for f in dataclasses.fields(cls) if f.init} - set(fixed))
    for key in params:
        if key not in takes:
            expected = f"expected one of {takes}" if takes else f"{cls.name!r} takes no parameters"
            raise ConfigError(f"unknown key {prefix + '.' + key!r}; {expected}")
    hints = typing.get_type_hints(cls)
    # The record checks its own values, finiteness included, in its own words.
    values = {key: coerce(hints[key], value, f"{prefix}.{key}", finite=False) for key, value in params.items()}
    try:
        return cls(**values, **fixed)
    except errors as err:
        raise ConfigError(f"{prefix}.{err}") from err


def coerce(hint: Any, value: Any, key: str, *, finite: bool = True) -> Any:
    """``value`` as the type ``hint`` says, or a :class:`ConfigError` naming ``key``.

    TOML has ``inf`` and ``nan``; no setting of a section means either, so with ``finite``
    they are refused here (a learning rate of inf would only fail once nodes train).
    """
    origin = get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return build(hint, value, prefix=f"{key}.")
    if hint is Params:
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a table; got {value!r}")
        return Params(value)
    if origin is Literal:
        allowed = get_args(hint)
        if value not in allowed:
            raise ConfigError(f"{key} = {value!r} is not one of {list(allowed)}")
        return value
    if origin in (types.UnionType, typing.Union):
        args = [a for a in get_args(hint) if a is not type(None)]
        if value is None:
            return None
        return coerce(args[0], value, key, finite=finite)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key} must be a list; got {value!r}")
        item = get_args(hint)[0]
        return tuple(coerce(item, v, f"{key}[{i}]", finite=finite) for i, v in enumerate(value))
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key} must be a number; got {value!r}")
        if finite and not math.isfinite(value):
            raise ConfigError(f"{key} must be a finite number; got {value!r}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be an integer; got {value!r}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false; got {value!r}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key} must be a string; got {value!r}")
        return value
    return value


def to_dict(value: Any) -> Any:
    """A JSON- and TOML-ready tree of a config: dataclasses and Params become dicts, tuples lists."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        # A section that is off unless given (metadata ``omit_if_none``) is left out while
        # unset, so the configs, and digests, of experiments without it stay as they were.
        return {f.name: to_dict(getattr(value, f.name)) for f in dataclasses.fields(value)
                if f.init and not (f.metadata.get("omit_if_none") and getattr(value, f.name) is None)}
    if isinstance(value, dict):
        return {k: to_dict(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_dict(v) for v in value]
    return value
