"""``bflsim audit <run-folder>``: check a ledger-backed run against its chain, end to end.

The chain comes first. A run on the embedded chain or on an anvil started for it leaves no
node behind, so the audit rebuilds that chain: it replays every signed transaction of
``trail/transactions.jsonl`` in order on a fresh chain of the same kind (py-evm, or anvil
with the run's chain id), and requires each to hash and end (success or revert) as it did in
the run; the registry lands at the recorded address only if the operator's history is intact,
and every node's transaction is accepted only with that node's signature. A replay that
diverges is blamed on the round the transaction belongs to. A run on another JSON-RPC
endpoint is read there (``--rpc-url`` overrides the recorded endpoint).

Then, from the chain's events plus the run folder and the data:

- **run**: the status and the rounds committed against ``federation.rounds``; a complete
  run committed every configured round, and a run that ended otherwise says where it
  stopped (the round opened and never committed is shown);
- **configuration** (registry v2): ``run_digest(manifest["run_facts"])`` is the digest the
  registry recorded at set-up (``RunConfigured``), the facts' config digest is the
  manifest's configuration's, and their test-split digest is the recomputed split's. A v1
  registry recorded none of this: the verdict says so instead of passing it;
- **setup**: nodes registered at their indices with the addresses the run's keys give
  (``ledger.key_source``: derived from the seed, from the secret when it is set here, read
  from the keystore when it is readable here; otherwise only the trail's addresses), each
  node's registered data digest (and sample count, v2) recomputed from its partition;
- **every round**: opened from the previous commit (round 1 from ``initial_weights`` of
  ``train.seed``); the cohort is ``federation.sample_cohort(round, eligible)`` with eligible
  the nodes still active on chain and not excluded (an exclusion for a failed integrity
  check is re-checked against the data); every update submitted on chain was either a
  candidate of the aggregation or refused for a reason its stored signed transaction, blob
  and partition confirm (censoring or framing a node fails); every candidate's sample count
  is its partition's size; updates of attackers whose attack needs no training are
  re-derived from the attack's seed and parameters; the aggregation, re-run from the blobs
  with the manifest's rule, reproduces the committed global digest, the accepted nodes and
  the digest of the scores;
- **evaluation**: every committed global model (``--rounds`` to sample) is scored again on
  the recomputed test split, reproducing the accuracy, F1 and FPR rows of metrics.csv and the
  confusion matrix of confusion.csv (and the committed evaluation digest, v2);
- **final model**: ``final_model.npz``, when present (it must be for a complete run),
  hashes to the last committed global digest;
- **closed loop** (``[loop]``): the devices and rule registered, every alert counted and
  every dispute re-scored from its window with the loop's global model, the quarantines as
  reported (:mod:`bflsim.audit.loop`).

Exit status (:attr:`AuditReport.exit_code`): 0 pass, 1 a mismatch, 2 a check could not be
made (data not found, a refusal whose transaction was not stored); a check skipped on request
(``skip_data``, ``rounds="none"``) is named in the verdict. The verdict also states the run's
status and the audit's trust level (:func:`trust_statement`): what a PASS proves depends on
who controls the chain and who can sign as the nodes.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from bflsim.audit.batched import batched_events
from bflsim.audit.context import _by_kind, _Context, _load_run_data, _replay
from bflsim.audit.evaluation import _check_evaluation, _check_final
from bflsim.audit.loop import check_loop
from bflsim.audit.rounds import _check_round
from bflsim.audit.setup import (
    _check_configuration,
    _check_data,
    _check_registry,
    _check_run_status,
    _exclusions,
)
from bflsim.audit.verdict import (
    AuditError,
    AuditReport,
    RoundVerdict,
    parse_rounds,
    trust_statement,
)
from bflsim.ledger.factory import open_recorded_chain
from bflsim.ledger.identity import expected_addresses
from bflsim.runfolder import (
    BLOBS,
    BlobStore,
    read_chain,
    read_rounds,
    read_run,
    read_transactions,
)

__all__ = ["AuditError", "AuditReport", "audit_run", "parse_rounds", "trust_statement"]


def audit_run(
    run_dir: str | Path,
    *,
    rpc_url: str | None = None,
    data_dir: str | Path | None = None,
    check_data: bool = True,
    rounds: str | None = None,
) -> AuditReport:
    """Audit the run folder ``run_dir`` (see the module docstring).

    ``data_dir``: where the dataset is (default: as the run recorded it, else
    ``$BFLSIM_DATA_DIR``, else ./data). ``check_data=False`` skips every check that needs
    the data, and the verdict says so. ``rounds``: which rounds to re-evaluate
    (:func:`parse_rounds`).
    """
    run_dir = Path(run_dir)
    try:
        run = read_run(run_dir)
        config = run.config
    except FileNotFoundError as err:
        raise AuditError(str(err)) from err
    except (ValueError, KeyError) as err:
        raise AuditError(f"{run_dir / 'manifest.json'}: its config cannot be read: {err}") from err
    try:
        chain_info = read_chain(run_dir)
        transactions = read_transactions(run_dir)
        trail_rounds = {r["round"]: r for r in read_rounds(run_dir)}
    except FileNotFoundError as err:
        raise AuditError(f"{err} (runs with ledger.backend = 'none' have no trail)") from err

    addresses, addresses_how = expected_addresses(config)
    with open_recorded_chain(chain_info, rpc_url) as (ledger, fresh):
        replayed: dict[int, list[str]] = defaultdict(list)
        if fresh:  # a new chain of the run's kind: rebuild the run's chain on it
            _replay(ledger, chain_info, transactions, replayed)
            fresh_chain = ("a fresh embedded py-evm chain" if chain_info.get("backend") == "embedded"
                           else f"a fresh anvil (chain {chain_info['chain_id']})")
            where = f"a replay of {len(transactions)} transactions on {fresh_chain}"
        else:
            where = f"{ledger.endpoint} (chain {chain_info['chain_id']}, registry {chain_info['contract']})"
        events = _by_kind(ledger.events())
    batch_notes: dict[int, str] = {}
    if chain_info.get("mode") == "batched":  # roots on chain: verify the trail against them
        events, found, batch_notes = batched_events(events, chain_info, trail_rounds, config.ledger.max_rejections)
        for server_round, problems in found.items():
            replayed[server_round].extend(problems)
    report = AuditReport(run_dir, where)
    report.trust = trust_statement(str(chain_info.get("backend", config.ledger.backend)), fresh,
                                   config.ledger.key_source, addresses_how if addresses is not None else None)
    registered = {int(e["index"]): e["node"] for e in events["NodeRegistered"].get("all", [])}
    ctx = _Context(run, config, chain_info, transactions, trail_rounds, events,
                   addresses if addresses is not None else registered, BlobStore(run_dir / BLOBS),
                   skip_data=not check_data)
    if check_data:
        _load_run_data(ctx, data_dir)
    else:
        report.skipped.append("data checks (--skip-data)")

    setup = RoundVerdict(0, problems=list(replayed.pop(0, [])), notes=[batch_notes[0]] if 0 in batch_notes else [])
    report.rounds.append(setup)
    if run.manifest.get("ledger") not in (None, chain_info):
        setup.problems.append("the manifest's ledger entry differs from trail/chain.json")
    _check_registry(ctx, registered, addresses is not None, setup)
    _check_data(ctx, setup)
    _check_run_status(ctx, report)
    _check_configuration(ctx, report)

    loop_replayed = replayed.pop(config.federation.rounds + 1, [])  # the loop's transactions come after the rounds
    committed = {r: bytes(e[0]["newGlobalDigest"]) for r, e in events["RoundCommitted"].items() if e}
    exclusions = _exclusions(ctx, setup)
    for server_round in sorted(set(events["RoundOpened"]) | {r for r in trail_rounds if r > 0} | set(replayed)):
        verdict = RoundVerdict(server_round, problems=list(replayed.get(server_round, [])))
        _check_round(ctx, server_round, committed, exclusions, verdict)
        if server_round in batch_notes:
            verdict.notes.append(batch_notes[server_round])
        report.rounds.append(verdict)
    chosen = parse_rounds(rounds, sorted(committed))
    if chosen == []:
        report.skipped.append("re-evaluation (--rounds none)")
    _check_evaluation(ctx, committed, chosen, report.evaluation, report)
    _check_final(run, committed, report.final)
    if config.loop is not None or loop_replayed:
        report.loop = RoundVerdict(-5, title="closed loop")
        check_loop(ctx, loop_replayed, report.loop)
    return report
