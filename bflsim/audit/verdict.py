"""The audit's verdicts: a line per check, the run's state, the exit status and the trust level."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

EVALUATED_METRICS = ("accuracy", "f1_macro", "fpr")


V1_REGISTRY = "not recorded on chain (v1 registry)"


class AuditError(RuntimeError):
    """The run folder cannot be audited at all (not ledger-backed, files missing)."""


@dataclass
class RoundVerdict:
    """One section of the audit: mismatches, checks it could not make, and notes."""

    server_round: int
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    unchecked: list[str] = field(default_factory=list)
    title: str | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def head(self) -> str:
        if self.title:
            return self.title
        return "round setup" if self.server_round == 0 else f"round {self.server_round:>3}"

    def line(self) -> str:
        if self.problems:
            return f"{self.head}: MISMATCH: " + "; ".join(self.problems)
        if self.unchecked:
            return f"{self.head}: NOT CHECKED: " + "; ".join(self.unchecked)
        return f"{self.head}: OK" + (f" ({'; '.join(self.notes)})" if self.notes else "")


@dataclass
class AuditReport:
    """The audit's findings; :meth:`lines` is what ``bflsim audit`` prints."""

    run_dir: Path
    chain: str
    status: str = "unknown"
    rounds_configured: int = 0
    rounds_committed: list[int] = field(default_factory=list)
    round_in_progress: int | None = None
    round_in_progress_on_chain: bool = True  # False: known from metrics.csv only
    registry_version: int = 1
    trust: list[str] = field(default_factory=list)
    not_on_chain: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    run: RoundVerdict = field(default_factory=lambda: RoundVerdict(-3, title="run"))
    configuration: RoundVerdict = field(default_factory=lambda: RoundVerdict(-2, title="configuration"))
    rounds: list[RoundVerdict] = field(default_factory=list)
    evaluation: RoundVerdict = field(default_factory=lambda: RoundVerdict(-4, title="evaluation"))
    final: RoundVerdict = field(default_factory=lambda: RoundVerdict(-1, title="final model"))
    loop: RoundVerdict | None = None  # the closed loop's section, for runs with [loop]

    @property
    def sections(self) -> list[RoundVerdict]:
        return [self.run, self.configuration, *self.rounds, self.evaluation, self.final,
                *([self.loop] if self.loop is not None else [])]

    @property
    def exit_code(self) -> int:
        """0 pass, 1 mismatch, 2 a check could not be made."""
        if any(s.problems for s in self.sections):
            return 1
        return 2 if any(s.unchecked for s in self.sections) else 0

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def run_summary(self) -> str:
        """``run complete, 3 of 3 rounds committed`` / ``run interrupted after round 2 of 4; ...``."""
        last = max(self.rounds_committed, default=0)
        of = f"{len(self.rounds_committed)} of {self.rounds_configured} rounds committed"
        if self.status == "complete":
            text = f"run complete, {of}"
        elif self.status == "running":
            text = f"run still marked running (no end recorded: live, or killed), {of}"
        else:
            text = f"run {self.status} after round {last} of {self.rounds_configured}"
        if self.round_in_progress is not None:
            how = "opened" if self.round_in_progress_on_chain else "started (rows in metrics.csv, nothing on chain)"
            text += f"; round {self.round_in_progress} {how}, never committed"
        return text

    def verdict(self) -> str:
        """The last line: PASS / FAIL / NOT CHECKED, always with the run's state and limits."""
        qualifiers = [self.run_summary()]
        if self.not_on_chain:
            qualifiers.append(f"{V1_REGISTRY}: {', '.join(self.not_on_chain)}")
        if self.skipped:
            qualifiers.append(f"skipped: {', '.join(self.skipped)}")
        qualifiers.append(f"trust: {self.trust_level()}")
        code = self.exit_code
        if code == 1:
            bad = [s.head.strip() for s in self.sections if s.problems]
            return f"verdict: FAIL ({len(bad)} mismatching: {', '.join(bad)}; {'; '.join(qualifiers)})"
        if code == 2:
            missing = [s.head.strip() for s in self.sections if s.unchecked]
            return f"verdict: NOT CHECKED ({', '.join(missing)} could not be checked; {'; '.join(qualifiers)})"
        return f"verdict: PASS ({'; '.join(qualifiers)})"

    def trust_level(self) -> str:
        return self.trust[0] if self.trust else "unknown"

    def lines(self) -> list[str]:
        out = [f"audit of {self.run_dir} on {self.chain}"]
        out += [f"trust: {line}" for line in self.trust]
        out += [s.line() for s in self.sections]
        out.append(self.verdict())
        return out


def parse_rounds(spec: str | None, committed: Sequence[int]) -> list[int] | None:
    """Which committed rounds to re-evaluate: ``None``/``"all"`` every one (and round 0, the
    initial model); ``"none"`` none; ``"1,5,last"`` those; ``"sample:N"`` N rounds spread
    evenly from the first to the last. Returns None for all."""
    if spec is None or spec.strip() in ("", "all"):
        return None
    spec = spec.strip()
    if spec == "none":
        return []
    last = max(committed, default=0)
    if spec.startswith("sample:"):
        try:
            count = int(spec.split(":", 1)[1])
        except ValueError as err:
            raise ValueError(f"--rounds sample:N needs an integer N; got {spec!r}") from err
        if count < 1:
            raise ValueError(f"--rounds sample:N needs N >= 1; got {count}")
        picks = np.linspace(0, len(committed) - 1, num=min(count, len(committed))).round().astype(int)
        return sorted({sorted(committed)[i] for i in picks}) if committed else []
    chosen = set()
    for part in spec.split(","):
        part = part.strip()
        if part == "last":
            chosen.add(last)
        elif part == "first":
            chosen.add(min(committed, default=0))
        elif part.isdigit():
            chosen.add(int(part))
        else:
            raise ValueError(f"--rounds takes 'all', 'none', 'sample:N' or a list of round numbers, "
                             f"'first' and 'last' (e.g. '1,5,last'); got {part!r}")
    return sorted(chosen)


def trust_statement(backend: str, fresh: bool, key_source: str, addresses_how: str | None) -> list[str]:
    """What an audit PASS proves for this chain and key mode (first line: the short level).

    ``addresses_how``: how the audit established the nodes' addresses, or None when it could
    not (a secret or keystore not available here).
    """
    if fresh:
        chain = (f"the chain is a replay of the operator's own recorded transactions ({backend}): no third party "
                 "witnessed it, so whoever holds every key can regenerate a whole history that replays cleanly")
    else:
        chain = (f"the chain was read live ({backend}): its history is what that node serves; on a chain others "
                 "run and keep, rounds are write-once and timestamped and cannot be rewritten afterwards")
    if key_source == "seed":
        keys = ("node keys derive from the key seed written in the manifest: anyone holding this folder can sign as "
                "every node, so signatures do not show who trained")
    elif addresses_how is None:
        keys = (f"node keys ({key_source}) are not derivable from the folder, but could not be checked here: the "
                "registry's addresses were compared with the trail only, so a re-keyed forgery would pass; audit "
                "with the secret or keystore to close this")
    else:
        keys = (f"node keys ({key_source}) are not derivable from the folder and the registered addresses were "
                f"checked against {addresses_how}: only holders of those keys could have signed the updates")
    if key_source == "seed" and fresh:
        level = "self-consistency only (replayed chain, keys derivable from the manifest: a forged folder can pass)"
    elif key_source == "seed":
        level = "a chain kept by others, but keys derivable from the manifest (anyone could have signed)"
    elif addresses_how is None:
        level = ("self-consistency only (node keys not checked here)" if fresh else
                 "a chain kept by others; node keys not checked here")
    elif fresh:
        level = "node signatures by key holders, on a chain the operator replays (the key holder can still forge)"
    else:
        level = "node signatures by key holders, on a chain kept by others"
    return [level, chain, keys]


def _short(mapping: dict[int, str]) -> str:
    return "{" + ", ".join(f"{k}: {v[:8]}" for k, v in sorted(mapping.items())) + "}"


def _ranges(values: Sequence[int]) -> str:
    values = sorted(values)
    if values == list(range(values[0], values[-1] + 1)) and len(values) > 2:
        return f"{values[0]}-{values[-1]}"
    return ", ".join(str(v) for v in values)
