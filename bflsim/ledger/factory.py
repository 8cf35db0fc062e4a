"""Choosing a chain, in one place: the ledger a run's ``[ledger]`` section asks for, and the
chain an audit reads a recorded run on."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from bflsim.ledger.base import Ledger, load_artifact
from bflsim.ledger.none import NoLedger

if TYPE_CHECKING:
    from bflsim.config import ExperimentConfig, LedgerConfig

__all__ = [
    "ANVIL_AGGREGATOR_KEY", "ANVIL_CHAIN_ID", "ANVIL_OPERATOR_KEY", "check_ledger", "open_ledger", "open_recorded_chain",
]

# anvil's first two pre-funded development accounts (public knowledge, from its default
# mnemonic "test test ... junk"): the owner and the aggregator. The server signs its own
# transactions with them so that every transaction of the run, its own included, is kept as
# signed bytes for the audit's replay.
ANVIL_OPERATOR_KEY = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
ANVIL_AGGREGATOR_KEY = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"
ANVIL_CHAIN_ID = 31337


@contextmanager
def open_ledger(config: LedgerConfig) -> Iterator[Ledger]:
    """Yield the configured ledger; an anvil started here is stopped on the way out.

    No contract is deployed yet: the strategy deploys one registry per run.
    """
    if config.backend == "none":
        yield NoLedger()
    elif config.backend == "embedded":
        from bflsim.ledger.web3_ledger import EmbeddedLedger

        yield EmbeddedLedger()
    elif config.backend == "anvil":
        from bflsim.ledger.anvil import AnvilNode
        from bflsim.ledger.web3_ledger import RpcLedger

        with AnvilNode(block_time=config.block_time, chain_id=config.chain_id) as node:
            yield RpcLedger(
                node.url, chain_id=config.chain_id or ANVIL_CHAIN_ID, private_key=ANVIL_OPERATOR_KEY,
                aggregator_key=ANVIL_AGGREGATOR_KEY, receipt_timeout=config.receipt_timeout,
            )
    elif config.backend == "rpc":
        from bflsim.ledger.web3_ledger import RpcLedger

        # the aggregator's key is derived from the operator's (web3_ledger.derive_aggregator_key)
        key = os.environ.get(config.operator_key_env) or None
        yield RpcLedger(
            str(config.rpc_url), chain_id=config.chain_id, private_key=key,
            receipt_timeout=config.receipt_timeout,
        )
    else:  # the config's Literal keeps this unreachable
        raise ValueError(f"ledger.backend = {config.backend!r} is not a ledger backend")


def check_ledger(config: ExperimentConfig) -> dict[str, Any] | None:
    """Pre-flight of ``ledger.backend = "rpc"``, before Ray or the chain session starts: the
    endpoint answers, serves ``ledger.chain_id`` (when set), has an operator account, and that
    account can pay the run (:func:`bflsim.ledger.web3_ledger.check_rpc_endpoint`). Returns
    what it found; None for the other backends, which start their own chain. A failure is a
    :class:`bflsim.config.ConfigError` naming the ``[ledger]`` keys and the cause."""
    if config.ledger.backend != "rpc":
        return None
    from bflsim.config import ConfigError
    from bflsim.ledger.base import LedgerError
    from bflsim.ledger.identity import node_identities
    from bflsim.ledger.web3_ledger import check_rpc_endpoint

    ledger = config.ledger
    try:
        return check_rpc_endpoint(
            str(ledger.rpc_url),
            chain_id=ledger.chain_id,
            private_key=os.environ.get(ledger.operator_key_env) or None,
            node_addresses=[identity.address for identity in node_identities(config)],
            rounds=config.federation.rounds,
            cohort_size=config.federation.cohort_size,
            mode=config.ledger.mode,
        )
    except (LedgerError, ValueError) as err:  # a bad key in the environment is a ValueError
        key = f", operator key from ${ledger.operator_key_env}" if os.environ.get(ledger.operator_key_env) else ""
        raise ConfigError(
            f"ledger.backend = 'rpc', ledger.rpc_url = {ledger.rpc_url!r}"
            f"{f', ledger.chain_id = {ledger.chain_id}' if ledger.chain_id is not None else ''}{key}: "
            f"refused before the run starts: {err}"
        ) from err


@contextmanager
def open_recorded_chain(info: dict[str, Any], rpc_url: str | None = None) -> Iterator[tuple[Ledger, bool]]:
    """A chain to audit a run whose ``trail/chain.json`` is ``info``; yields ``(ledger, fresh)``.

    A run on the embedded chain or on an anvil started for it left no node behind: the
    ledger is a fresh chain of the same kind (py-evm, or anvil with the run's chain id) and
    ``fresh`` is True, for the caller to replay the run's transactions on. Otherwise (or with
    ``rpc_url``) it is the recorded endpoint's chain, attached to the run's registry. The
    ledger reads the registry of the run's ``registry_version`` (none recorded: 1).
    """
    backend, chain_id = info.get("backend"), int(info["chain_id"])
    artifact = load_artifact(version=int(info.get("registry_version", 1)))
    if backend == "embedded" and not rpc_url:
        from bflsim.ledger.web3_ledger import EmbeddedLedger

        yield EmbeddedLedger(artifact=artifact), True
    elif backend == "anvil" and not rpc_url:
        from bflsim.ledger.anvil import AnvilNode
        from bflsim.ledger.web3_ledger import RpcLedger

        with AnvilNode(chain_id=chain_id) as node:
            yield RpcLedger(node.url, chain_id=chain_id, artifact=artifact), True
    else:
        from bflsim.ledger.web3_ledger import RpcLedger

        ledger = RpcLedger(rpc_url or str(info["endpoint"]), chain_id=chain_id, artifact=artifact)
        ledger.attach(str(info["contract"]))
        yield ledger, False
