"""Reading experiments: TOML files, dotted overrides, the wire form, and old files' keys.

- :func:`parse_experiment` builds an :class:`ExperimentConfig` from a TOML-shaped dict (an
  experiment file, a manifest's ``config``, a message's wire form);
- :func:`set_dotted` and :func:`with_overrides` change dotted keys (``--set``, a sweep
  point, ``flwr run``'s ``overrides``); :func:`parse_overrides` reads ``KEY=VALUE`` text;
- :func:`to_wire` / :func:`from_wire`: the config as it travels in a Flower ConfigRecord;
- :func:`upgrade_legacy`: files and manifests written before rules and attacks had their
  own ``params`` tables keep loading.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import tomllib
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

from bflsim.aggregators import AGGREGATORS
from bflsim.attacks import ATTACKS
from bflsim.config.experiment import ExperimentConfig
from bflsim.config.sections import AttackConfig, FederationConfig
from bflsim.config.typed import ConfigError, build, to_dict

# Old flat keys -> where they live now. Parameters land in the params table of the named
# rule or attack only when it takes them; elsewhere they are dropped, as they were ignored.
LEGACY_KEYS = {
    "attack.mode": "attack.params.mode",
    "attack.mu": "attack.params.mu",
    "attack.sigma": "attack.params.sigma",
    "attack.scale": "attack.params.scale",
    "attack.factor": "attack.params.factor",
    "aggregator.num_malicious": "aggregator.assumed_malicious",
    "aggregator.num_selected": "aggregator.params.num_selected",
    "aggregator.trim_fraction": "aggregator.params.trim_fraction",
}
LEGACY_VALUES = {("data", "split"): {"kdd-test": "official"}}


FILE_RELATIVE_KEYS = ("data.data_dir",)
"""Paths an experiment file gives relative to its own folder (not to the current directory)."""


def read_toml(path: str | Path) -> dict[str, Any]:
    """The raw table of an experiment file; a missing file or bad TOML is a ConfigError.

    A relative ``data.data_dir`` (in ``[data]``, a scenario's ``set`` or a sweep axis) is
    made absolute against the file's folder, so the experiment reads the same data from
    any current directory.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"experiment file not found: {path}")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML: {err}") from err
    return resolve_file_paths(raw, path.absolute().parent)


def resolve_file_paths(raw: dict[str, Any], folder: Path) -> dict[str, Any]:
    """``raw`` with every relative path of :data:`FILE_RELATIVE_KEYS` made absolute against ``folder``."""

    def absolute(value: Any) -> Any:
        if isinstance(value, str) and value and not Path(value).expanduser().is_absolute():
            return str(folder / value)
        return value

    for dotted in FILE_RELATIVE_KEYS:
        section, key = dotted.split(".")
        table = raw.get(section)
        if isinstance(table, dict) and key in table:
            table[key] = absolute(table[key])
        for scenario in raw.get("scenarios", []) if isinstance(raw.get("scenarios"), list) else []:
            overrides = scenario.get("set") if isinstance(scenario, dict) else None
            if isinstance(overrides, dict) and dotted in overrides:
                overrides[dotted] = absolute(overrides[dotted])
        sweep = raw.get("sweep")
        for axes in (sweep.get("grid"), sweep.get("zip")) if isinstance(sweep, dict) else ():
            if isinstance(axes, dict) and isinstance(axes.get(dotted), list):
                axes[dotted] = [absolute(v) for v in axes[dotted]]
    return raw


def parse_experiment(raw: dict[str, Any]) -> ExperimentConfig:
    """Build an :class:`ExperimentConfig` from a TOML-shaped dict.

    The top-level ``[experiment]`` table holds ``name``, ``kind`` and ``description``; every
    other table maps onto the field of the same name. Old flat keys are upgraded first.
    """
    raw = dict(raw)
    header = raw.pop("experiment", {})
    if not isinstance(header, dict):
        raise ConfigError("[experiment] must be a table")
    return build(ExperimentConfig, upgrade_legacy({**header, **raw}), prefix="")


def parse_recorded(raw: dict[str, Any]) -> ExperimentConfig:
    """The config a run recorded (its manifest's ``config``), meaning what it meant then.

    Manifests written before the defender had its own default (no
    ``aggregator.assumed_fraction``) left ``aggregator.assumed_malicious`` unset for "the
    number of attackers drawn": that is the f those runs used, so it is set so here.
    """
    raw = copy.deepcopy(dict(raw))
    aggregator = raw.get("aggregator")
    legacy = isinstance(aggregator, dict) and "assumed_fraction" not in aggregator
    if legacy and aggregator.get("assumed_malicious", aggregator.get("num_malicious")) is None:
        attack = build(AttackConfig, upgrade_legacy({"attack": raw.get("attack", {})})["attack"], prefix="attack.")
        federation = raw.get("federation", {})
        num_nodes = federation.get("num_nodes", FederationConfig.num_nodes) if isinstance(federation, dict) else 0
        aggregator["assumed_malicious"] = attack.count(int(num_nodes))
        aggregator.pop("num_malicious", None)
    return parse_experiment(raw)


def upgrade_legacy(tree: dict[str, Any]) -> dict[str, Any]:
    """A copy of a config tree with the flat keys of older files moved where they live now.

    ``attack.sigma`` becomes ``attack.params.sigma`` when the named attack takes ``sigma``
    (and is dropped otherwise, as it was ignored); ``aggregator.num_malicious`` becomes
    ``aggregator.assumed_malicious``; ``data.split = "kdd-test"`` becomes ``"official"``.
    A key given both ways keeps the new one (a point or ``--set`` that overrides an old file's
    flat key sets the new key).
    """
    tree = copy.deepcopy(tree)
    for old, new in LEGACY_KEYS.items():
        section, key = old.split(".")
        table = tree.get(section)
        if not isinstance(table, dict) or key not in table:
            continue
        value = table.pop(key)
        *parents, leaf = new.split(".")[1:]
        if parents:  # a parameter: only for a rule or attack that takes it
            registry = ATTACKS if section == "attack" else AGGREGATORS
            record = registry.get(table.get("name", "none" if section == "attack" else "fedavg"))
            if record is None or value is None or leaf not in _parameters(record):
                continue
        target = table
        for part in parents:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise ConfigError(f"{section}.{part} must be a table")
        target.setdefault(leaf, value)  # the new key wins: it is the later override
    for (section, key), renames in LEGACY_VALUES.items():
        table = tree.get(section)
        if isinstance(table, dict) and isinstance(table.get(key), str) and table[key] in renames:
            table[key] = renames[table[key]]
    return tree


def _parameters(record: type) -> set[str]:
    return {f.name for f in dataclasses.fields(record) if f.init}


def set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``dotted`` (e.g. ``"train.epochs"``) in a config tree, creating missing tables.

    An old flat key is set where it lives now (``attack.sigma`` -> ``attack.params.sigma``).
    A table value is merged into the table it names: ``aggregator = {name = "trimmed_mean",
    params = {trim_fraction = 0.2}}`` sets those two keys and keeps the others. Unknown keys
    are caught when the tree is parsed, naming the key.
    """
    dotted = LEGACY_KEYS.get(dotted, dotted)
    *parents, leaf = dotted.split(".")
    node = tree
    for depth, part in enumerate(parents):
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{dotted!r} is not a config key: {'.'.join(parents[: depth + 1])} is not a table")
    if isinstance(value, dict) and isinstance(node.get(leaf), dict):
        node[leaf] = {**node[leaf], **value}
    else:
        node[leaf] = value


def apply_overrides(tree: dict[str, Any], overrides: dict[str, Any]) -> None:
    """Set every dotted key of ``overrides`` in ``tree`` (:func:`set_dotted`).

    A record's parameters belong to its name: overrides that name another attack or rule
    start it from its defaults plus the parameters they give (``--set attack.name=sign_flip``
    on a Gaussian experiment drops ``mode`` and ``sigma``).
    """
    for section in ("attack", "aggregator"):
        table, whole = tree.get(section), overrides.get(section)
        name = overrides.get(f"{section}.name", whole.get("name") if isinstance(whole, dict) else None)
        if isinstance(table, dict) and name is not None and name != table.get("name"):
            table["params"] = {}
    for dotted, value in overrides.items():
        set_dotted(tree, dotted, value)


def with_overrides(config: ExperimentConfig, overrides: dict[str, Any]) -> ExperimentConfig:
    """A copy with dotted keys replaced, e.g. ``{"train.epochs": 2}``; validated again."""
    tree = to_dict(config)
    apply_overrides(tree, overrides)
    return parse_experiment(tree)


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["train.epochs=2", "data.dataset='nsl-kdd'"]`` -> dict, values read as TOML."""
    overrides = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set expects KEY=VALUE; got {item!r}")
        try:
            value = tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            value = text  # a bare word is a string: --set data.dataset=nsl-kdd
        overrides[key.strip()] = value
    return overrides


def to_wire(config: ExperimentConfig) -> str:
    """The config as JSON text, as it travels to the nodes in a Flower ConfigRecord."""
    return json.dumps(to_dict(config), sort_keys=True)


def config_digest(config: ExperimentConfig) -> str:
    """``0x`` + sha256 of the resolved config's canonical JSON (:func:`to_wire`).

    Two configs with the same digest run the same experiment: every parameter, defaults
    included, is in the text. A plan point counts as done only if its stored digest equals
    the one requested now, and the registry records it at set-up.
    """
    return recorded_config_digest(to_dict(config))


def recorded_config_digest(raw: Mapping[str, Any]) -> str:
    """The :func:`config_digest` a run computed, from the config its manifest recorded: the
    text as it was, so keys added to the config since (with their defaults) do not change it."""
    return "0x" + hashlib.sha256(json.dumps(raw, sort_keys=True).encode()).hexdigest()


@lru_cache(maxsize=8)
def from_wire(text: str) -> ExperimentConfig:
    """The config a node received (parsed once per process and text)."""
    return parse_experiment(json.loads(text))
