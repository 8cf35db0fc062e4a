"""``bflsim reproduce`` (``make paper``): run every experiment behind results/ and rebuild it.

The recipe is ``results/reproduce.toml``: one step per results folder, each a list of
bflsim commands (runs, then the report that writes the folder). Before anything runs the
plan is printed with each step's time on this project's machine kind and the total. Steps run
in order, each command as its own ``bflsim`` process; a step that finished is marked done
(``runs/reproduce/<step>.done``, with the commit it ran) and skipped next time, and the runs
inside a step resume at their finished points, so an interrupted reproduction carries on.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

from bflsim.config import ConfigError
from bflsim.progress import Progress
from bflsim.runfolder.provenance import git_commit, utc_now

RECIPE = Path("results/reproduce.toml")
WORK = Path("runs/reproduce")
COMMANDS = ("run", "sweep", "report", "bench", "audit", "figures")


@dataclass(frozen=True)
class Step:
    name: str
    what: str
    minutes: float
    commands: tuple[tuple[str, ...], ...]


def read_recipe(path: str | Path = RECIPE) -> list[Step]:
    """The steps of a recipe file; a malformed one is refused naming the step and key."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"reproduction recipe not found: {path}")
    raw = tomllib.loads(path.read_text())
    steps = []
    for i, item in enumerate(raw.get("step", [])):
        where = f"{path}: step[{i}]"
        if unknown := sorted(set(item) - {"name", "what", "minutes", "commands"}):
            raise ConfigError(f"{where}: unknown key {unknown[0]!r}; expected name, what, minutes, commands")
        if not isinstance(item.get("name"), str) or not isinstance(item.get("commands"), list) or not item["commands"]:
            raise ConfigError(f"{where}: needs a name and a non-empty list of commands")
        commands = tuple(tuple(shlex.split(c)) for c in item["commands"])
        if bad := [c for c in commands if not c or c[0] not in COMMANDS]:
            raise ConfigError(f"{where} ({item['name']}): {' '.join(bad[0])!r} is not a bflsim command of "
                              f"{list(COMMANDS)}")
        steps.append(Step(item["name"], str(item.get("what", "")), float(item.get("minutes", 0.0)), commands))
    if not steps:
        raise ConfigError(f"{path}: no [[step]]")
    if len({s.name for s in steps}) != len(steps):
        raise ConfigError(f"{path}: two steps share a name")
    return steps


def plan_lines(steps: list[Step], only: set[str] | None = None, work: Path = WORK) -> list[str]:
    """The plan as printed before anything runs: each step, done or its time, and the total."""
    lines, left = [], 0.0
    for step in steps:
        if only and step.name not in only:
            continue
        done = (work / f"{step.name}.done").is_file()
        left += 0.0 if done else step.minutes
        state = "done, skipped" if done else f"~{_duration(step.minutes)}"
        lines.append(f"  {step.name:<14} {state:<16} {step.what}")
    lines.append(f"  {'total':<14} ~{_duration(left)} on 2 cores")
    return lines


def reproduce(steps: list[Step], *, only: set[str] | None = None, dry_run: bool = False,
              work: Path = WORK, progress: Progress | None = None) -> int:
    """Run the steps not yet done; return the first failing command's exit status, else 0."""
    progress = progress or Progress()
    if only and (unknown := sorted(only - {s.name for s in steps})):
        raise ConfigError(f"--only {unknown[0]!r}: no such step; the steps are {[s.name for s in steps]}")
    print("reproduction plan (results/reproduce.toml):")
    print("\n".join(plan_lines(steps, only, work)))
    if dry_run:
        return 0
    work.mkdir(parents=True, exist_ok=True)
    for step in steps:
        marker = work / f"{step.name}.done"
        if (only and step.name not in only) or marker.is_file():
            continue
        for command in step.commands:
            progress.say(f"{step.name}: bflsim {' '.join(command)}")
            status = subprocess.run([sys.executable, "-m", "bflsim.cli", *command], check=False).returncode
            if status != 0:
                progress.say(f"{step.name}: exit status {status}; run `bflsim reproduce` again to carry on")
                return status
        marker.write_text(f"finished {utc_now()} at commit {git_commit() or 'unknown'}\n")
    return 0


def _duration(minutes: float) -> str:
    return f"{minutes / 60:.1f} h" if minutes >= 90 else f"{minutes:.0f} min"
