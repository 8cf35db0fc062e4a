"""Experiments with several runs: named scenarios and parameter grids, resumable.

An experiment file may list scenarios (paper Table 4: three settings of one experiment)

    [[scenarios]]
    name = "krum_under_attack"
    label = "Krum under attack"
    set = { "aggregator.name" = "krum", "attack.name" = "gaussian" }

or a grid (the attacker-fraction sweep): ``grid`` is a product over its keys, ``zip``
one more axis whose lists advance together (e.g. one seed for every seed key):

    [sweep]
    grid = { "attack.fraction" = [0.0, 0.2, 0.4], "aggregator.name" = ["fedavg", "krum"] }
    zip = { "train.seed" = [1, 2, 3], "attack.seed" = [1, 2, 3] }

A grid axis may also set a whole table, e.g. rules with their own parameters:

    grid = { "aggregator" = [{ name = "krum" }, { name = "trimmed_mean", params = { trim_fraction = 0.4 } }] }

Several grids (``[[sweep]]``, an array of tables) run one after the other: e.g. every attack
at three attacker shares, and once without attack (a baseline that has no share).

Every point is parsed and validated (:func:`check_config`: its dataset and models exist in
their registries) before the first run starts. Running a plan is :mod:`bflsim.runner`'s job.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bflsim.config import (
    ConfigError,
    ExperimentConfig,
    apply_overrides,
    parse_experiment,
    read_toml,
    with_overrides,
)
from bflsim.data import DataError, check_data_config
from bflsim.models import MODELS


@dataclass(frozen=True)
class Point:
    """One run of a plan: its folder name, a human label, and the keys it changes."""

    name: str
    label: str
    overrides: tuple[tuple[str, Any], ...]

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "label": self.label, "overrides": dict(self.overrides)}


@dataclass(frozen=True)
class Plan:
    """The runs of an experiment file, each with its validated config."""

    name: str
    points: tuple[tuple[Point, ExperimentConfig], ...]
    raw: dict[str, Any] | None = field(default=None, compare=False, repr=False)  # the file, less its points

    def only(self, names: Iterable[str]) -> Plan:
        """The plan's points with these names (each must exist)."""
        names = list(names)
        known = [p.name for p, _ in self.points]
        if unknown := sorted(set(names) - set(known)):
            raise ConfigError(f"--only {unknown[0]!r}: {self.name} has no such point; it has {known}")
        return Plan(self.name, tuple((p, c) for p, c in self.points if p.name in names), self.raw)

    def with_overrides(self, overrides: dict[str, Any]) -> Plan:
        """Every point with the same dotted keys changed (``--set``), checked again. From the
        file's own text when the plan has it, so defaults that depend on other keys (the
        defender's f on the cohort) follow the new values instead of keeping the old ones."""
        if self.raw is None:
            return Plan(self.name, tuple((p, with_point_overrides(c, overrides)) for p, c in self.points))
        changed = tuple((p, _config_at(self.raw, p, overrides)) for p, _ in self.points)
        return Plan(self.name, changed, self.raw)


def load_plan(path: str | Path) -> Plan:
    """Read an experiment file into its runs (one run when it has no scenarios or grid)."""
    raw = read_toml(path)
    try:
        return plan_from_dict(raw)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from err


def plan_from_dict(raw: dict[str, Any]) -> Plan:
    raw = copy.deepcopy(raw)
    scenarios = raw.pop("scenarios", None)
    sweep = raw.pop("sweep", None)
    if scenarios is not None and sweep is not None:
        raise ConfigError("give [[scenarios]] or [sweep], not both")
    name = raw.get("experiment", {}).get("name", "experiment")
    if scenarios is not None:
        points = [_scenario_point(i, s) for i, s in enumerate(scenarios)]
    elif isinstance(sweep, list):  # [[sweep]]: several grids, their points one after the other
        points = [point for i, part in enumerate(sweep) for point in _grid_points(part, f"sweep[{i}]")]
    elif sweep is not None:
        points = _grid_points(sweep)
    else:
        return Plan(name, ((Point(name, name, ()), check_config(parse_experiment(copy.deepcopy(raw)))),), raw)
    names = [p.name for p in points]
    if len(set(names)) != len(names):
        repeated = sorted({n for n in names if names.count(n) > 1})
        raise ConfigError(f"point names repeat: {repeated} (two points set the same keys to the same values)")
    return Plan(name, tuple((p, _config_at(raw, p)) for p in points), raw)


def _scenario_point(index: int, scenario: Any) -> Point:
    key = f"scenarios[{index}]"
    if not isinstance(scenario, dict):
        raise ConfigError(f"{key} must be a table")
    unknown = set(scenario) - {"name", "label", "set"}
    if unknown:
        raise ConfigError(f"unknown key {key}.{min(unknown)}; expected name, label, set")
    if not isinstance(scenario.get("name"), str) or not scenario["name"]:
        raise ConfigError(f"{key}.name must be a non-empty string")
    overrides = scenario.get("set", {})
    if not isinstance(overrides, dict):
        raise ConfigError(f"{key}.set must be a table of dotted keys")
    return Point(scenario["name"], scenario.get("label", scenario["name"]), tuple(overrides.items()))


def _grid_points(sweep: Any, where: str = "sweep") -> list[Point]:
    if not isinstance(sweep, dict):
        raise ConfigError(f"[{where}] must be a table")
    unknown = set(sweep) - {"grid", "zip"}
    if unknown:
        raise ConfigError(f"unknown key {where}.{min(unknown)}; expected grid, zip")
    grid, zipped = sweep.get("grid", {}), sweep.get("zip", {})
    for key, values in {**grid, **zipped}.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"sweep key {key!r} must map to a non-empty list; got {values!r}")
    lengths = {len(v) for v in zipped.values()}
    if len(lengths) > 1:
        raise ConfigError(f"{where}.zip lists differ in length: { {k: len(v) for k, v in zipped.items()} }")
    axes = [[((k, v),) for v in values] for k, values in grid.items()]
    if zipped:
        axes.append([tuple((k, zipped[k][i]) for k in zipped) for i in range(lengths.pop())])
    points = []
    for combo in itertools.product(*axes):
        overrides = tuple(pair for axis in combo for pair in axis)
        label = ", ".join(f"{k}={v}" for k, v in overrides)
        points.append(Point(_slug(overrides), label, overrides))
    return points


def _slug(overrides: tuple[tuple[str, Any], ...]) -> str:
    """``aggregator.name=krum, attack.fraction=0.2, train.seed=1`` -> ``aggregator-krum_fraction-0.2_seed-1``.

    A table value names itself by its ``name`` and parameters:
    ``aggregator={name="trimmed_mean", params={trim_fraction=0.4}}`` -> ``aggregator-trimmed_mean-trim-fraction-0.4``.
    """
    parts: list[str] = []
    for key, value in overrides:
        segments = key.split(".")
        short = segments[-2] if segments[-1] == "name" and len(segments) > 1 else segments[-1]
        part = f"{short.replace('_', '-')}-{_slug_value(value)}".replace("/", "-")
        if part not in parts:
            parts.append(part)
    return "_".join(parts)


def _slug_value(value: Any) -> str:
    if not isinstance(value, dict):
        return str(value)
    words = [str(value["name"])] if "name" in value else []
    for key, item in value.items():
        if key == "params" and isinstance(item, dict):
            words += [f"{k.replace('_', '-')}-{v}" for k, v in item.items()]
        elif key != "name":
            words.append(f"{key.replace('_', '-')}-{_slug_value(item)}")
    return "-".join(words)


def _config_at(raw: dict[str, Any], point: Point, overrides: dict[str, Any] | None = None) -> ExperimentConfig:
    tree = copy.deepcopy(raw)  # old flat keys are upgraded after the point's, against its names
    try:
        apply_overrides(tree, dict(point.overrides))
        apply_overrides(tree, dict(overrides or {}))  # --set, after the point's own keys
        return check_config(parse_experiment(tree))
    except ConfigError as err:
        raise ConfigError(f"point {point.name!r} ({point.label}): {err}") from err


def with_point_overrides(config: ExperimentConfig, overrides: dict[str, Any]) -> ExperimentConfig:
    """:func:`bflsim.config.with_overrides`, then :func:`check_config`."""
    return check_config(with_overrides(config, overrides))


def check_config(config: ExperimentConfig) -> ExperimentConfig:
    """Check what the config alone cannot: its dataset and models exist in their registries,
    and a federated run trains one model that can be federated. Returns ``config``."""
    try:
        check_data_config(config.data)
    except DataError as err:
        raise ConfigError(str(err)) from err
    for name in config.models.names:
        if name not in MODELS:
            raise ConfigError(f"models.names: unknown model {name!r}; expected one of {list(MODELS)}")
    federated = [name for name, model in MODELS.items() if model.federated]
    if config.kind == "federated" and (len(config.models.names) != 1 or config.models.names[0] not in federated):
        raise ConfigError(
            f"models.names must name one model that can be federated ({' or '.join(federated)}) for a "
            f"federated run; got {list(config.models.names)}"
        )
    return config
