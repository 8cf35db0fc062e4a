"""What every audit check reads (:class:`_Context`): the run, its chain rebuilt or read live, its events, and its data found where the run recorded it."""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bflsim.aggregators import AggregatorError, DefenceState
from bflsim.audit.verdict import AuditError, RoundVerdict
from bflsim.config import ExperimentConfig
from bflsim.data import DataError, PreparedData, resolve_data_dir
from bflsim.edge_node import load_data, node_partitions
from bflsim.ledger.base import ChainEvent, LedgerError
from bflsim.ledger.replay import NotReplayable, replay_findings
from bflsim.runfolder import (
    BlobError,
    BlobStore,
    Run,
    reference_path,
)


@dataclass
class _Context:
    """What every check reads: the run, its config, the chain's events, the data if held."""

    run: Run
    config: ExperimentConfig
    chain_info: dict[str, Any]
    transactions: list[dict[str, Any]]
    trail_rounds: dict[int, dict[str, Any]]
    events: dict[str, Any]
    addresses: dict[int, str]
    store: BlobStore
    data: PreparedData | None = None
    data_path: str | None = None
    data_missing: str | None = None  # why the data could not be loaded (None: loaded or skipped)
    skip_data: bool = False
    defence: DefenceState | None = None  # what the rule carries between rounds, rebuilt as rounds replay

    def __post_init__(self) -> None:
        if self.defence is None:
            self.defence = DefenceState(self.config.rule, self.config.aggregator.seed, self.stored_reference)

    def stored_reference(self, server_round: int, weights: Any) -> np.ndarray:
        """The server's reference update of a round as the run stored it (FLTrust)."""
        path = self.run.path / reference_path(server_round)
        if not path.is_file():
            raise AggregatorError(f"no reference update stored for round {server_round} ({path.name})")
        return np.load(path, allow_pickle=False)

    @property
    def index_of(self) -> dict[str, int]:
        return {address: index for index, address in self.addresses.items()}

    def data_unchecked(self, verdict: RoundVerdict, what: str) -> bool:
        """True when the data is not at hand; says so in ``verdict`` unless skipped on request."""
        if self.data is not None:
            return False
        if not self.skip_data:
            verdict.unchecked.append(f"{what}: {self.data_missing}")
        return True


def _data_dir_candidates(run: Run, config: ExperimentConfig, explicit: str | Path | None) -> list[tuple[str, Path]]:
    """Where the run's data may be, most authoritative first: the folder given to the audit,
    the folder the run recorded (``data_dir`` in the manifest, else ``data.data_dir``; a
    relative one against the run's recorded ``cwd``, else the current directory), the one its
    source files lie in, then ``$BFLSIM_DATA_DIR`` / ./data. Whichever loads must hold files
    with the sha256 the manifest recorded."""
    if explicit is not None:
        return [("--data-dir", Path(explicit).expanduser().absolute())]
    manifest = run.manifest
    cwd = Path(manifest["cwd"]) if manifest.get("cwd") else None
    found: list[tuple[str, Path]] = []

    def add(why: str, value: str | Path | None) -> None:
        if not value:
            return
        path = Path(value).expanduser()
        if not path.is_absolute():  # relative to the run's recorded working directory, else to ours
            path = (cwd or Path.cwd()) / path
        if all(path != p for _, p in found):
            found.append((why, path))

    add("the manifest's data_dir", manifest.get("data_dir"))
    add("data.data_dir", config.data.data_dir)
    for source in (manifest.get("data") or {}).get("sources", []):
        path = Path(str(source.get("path", "")))
        for file in _registered_files(config):
            for name in (file, file + ".gz"):
                if path.is_absolute() and str(path).endswith("/" + name):
                    add("the recorded data files' folder", str(path)[: -len(name) - 1])
    add("$BFLSIM_DATA_DIR or ./data", resolve_data_dir(None))
    return found


def _registered_files(config: ExperimentConfig) -> list[str]:
    from bflsim.data import DATASETS

    record = DATASETS.get(config.data.dataset)
    return [f.relpath for f in record.files] if record is not None else []


def _recorded_path_config(run: Run, config: ExperimentConfig) -> ExperimentConfig:
    """``config`` with a relative ``data.path`` resolved as the run resolved it (its recorded
    source file, else its recorded working directory)."""
    if not config.data.path or Path(config.data.path).expanduser().is_absolute():
        return config
    sources = (run.manifest.get("data") or {}).get("sources", [])
    recorded = [Path(str(s["path"])) for s in sources if Path(str(s.get("path", ""))).is_absolute()]
    if recorded:
        path = recorded[0]
    elif run.manifest.get("cwd"):
        path = Path(run.manifest["cwd"]) / config.data.path
    else:
        return config
    return dataclasses.replace(config, data=dataclasses.replace(config.data, path=str(path)))


def _load_run_data(ctx: _Context, explicit: str | Path | None) -> None:
    """Load the run's prepared data as the run did; record why not when it cannot."""
    load_data.cache_clear()  # the files as they are now, not as an earlier audit in this process saw them
    node_partitions.cache_clear()
    config = _recorded_path_config(ctx.run, ctx.config)
    if config is not ctx.config:
        ctx.config = config
    if config.data.dataset == "synthetic":
        candidates: list[tuple[str, Path | None]] = [("synthetic", None)]
    else:
        candidates = list(_data_dir_candidates(ctx.run, config, explicit))
    recorded = {(s.get("sha256")) for s in (ctx.run.manifest.get("data") or {}).get("sources", [])}
    tried = []
    for why, path in candidates:
        try:
            data = load_data(config.data, None if path is None else str(path))
        except (DataError, FileNotFoundError, OSError, ValueError) as err:
            tried.append(f"{path} ({why}): {str(err)[:120]}")
            continue
        digests = {d for _, d in data.sources}
        if recorded - {None} and digests != recorded:
            tried.append(f"{path} ({why}): its files' sha256 differ from the manifest's")
            continue
        ctx.data, ctx.data_path = data, None if path is None else str(path)
        return
    ctx.data_missing = "the run's data was not found; tried " + "; ".join(tried) + (
        " (give --data-dir, or --skip-data to audit without the data checks)")


def _partition_sizes(ctx: _Context) -> dict[int, int] | None:
    if ctx.data is None:
        return None
    return {i: len(rows) for i, rows in enumerate(node_partitions(ctx.config.data, ctx.config.federation,
                                                                    ctx.data_path))}


def _blob(store: BlobStore, digest: bytes, what: str, problems: list[str]) -> list[np.ndarray] | None:
    try:
        return store.get(digest)
    except BlobError as err:
        problems.append(f"{what}: {err}")
        return None


def _replay(ledger: Any, info: dict[str, Any], transactions: list[dict[str, Any]],
            blame: dict[int, list[str]]) -> None:
    """Send every recorded signed transaction again (:func:`bflsim.ledger.replay.replay_findings`);
    each must hash, use gas and end as recorded. A divergence is blamed on the round its
    transaction belongs to (0: set-up)."""
    if ledger.chain_id != int(info["chain_id"]):
        blame[0].append(f"the replay chain has id {ledger.chain_id}, the run's had {info['chain_id']}")
    try:
        for _, tx, finding in replay_findings(ledger, transactions):
            blame[int(tx.get("round") or 0)].append(finding)
    except NotReplayable as err:
        raise AuditError(f"{err}; audit this run against its live endpoint with --rpc-url") from err
    for server_round, problems in list(blame.items()):
        if len(problems) > 5:
            blame[server_round] = problems[:5] + [f"... and {len(problems) - 5} more"]
    try:
        ledger.attach(str(info["contract"]))
    except LedgerError as err:
        raise AuditError(f"after the replay, no registry at {info['contract']}: {err}") from err


def _by_kind(events: list[ChainEvent]) -> dict[str, Any]:
    """Events grouped: per-round kinds keyed by round, the rest as lists under ``"all"``."""
    grouped: dict[str, Any] = defaultdict(lambda: defaultdict(list))
    for event in events:
        if event.name in ("RoundOpened", "RoundCommitted", "UpdateSubmitted", "NodeRejected", "BatchOpened",
                          "BatchCommitted"):
            grouped[event.name][int(event.args["round"])].append(event.args)
        else:
            grouped[event.name].setdefault("all", []).append(event.args)
    return grouped
