"""Split a training set over K edge nodes: IID, label-skewed Dirichlet, or by-class shards.

- ``iid``: a random permutation cut into K near-equal parts.
- ``dirichlet``: for every class, the shares of the K nodes are drawn from Dir(alpha); small
  alpha gives each node few classes, large alpha approaches IID (Hsu, Qi and Brown, "Measuring
  the Effects of Non-Identical Data Distribution for Federated Visual Classification", 2019).
- ``shards``: rows sorted by label are cut into K * shards_per_node equal shards and each node
  is dealt ``shards_per_node`` of them at random (McMahan et al., "Communication-Efficient
  Learning of Deep Networks from Decentralized Data", AISTATS 2017).

Every scheme returns disjoint index arrays that cover all rows, each sorted and non-empty,
and the same arrays for the same seed.

Before a federated run starts, :func:`check_enough_rows` and :func:`check_node_rows` refuse
a federation the training split cannot feed: more nodes than rows, or a node left with
fewer than ``federation.min_node_rows`` rows (Dirichlet with a tiny alpha), naming the keys.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import numpy as np
from numpy.typing import NDArray

from bflsim.data.errors import DataError

if TYPE_CHECKING:
    from bflsim.config import FederationConfig

PartitionScheme = Literal["iid", "dirichlet", "shards"]
DIRICHLET_ATTEMPTS = 100


def partition(
    labels: NDArray,
    num_nodes: int,
    scheme: PartitionScheme,
    *,
    alpha: float = 0.5,
    shards_per_node: int = 2,
    seed: int,
) -> list[NDArray[np.int64]]:
    """Assign every row index of ``labels`` to one of ``num_nodes`` nodes.

    Parameters
    ----------
    labels
        One label per row (any dtype); only equality matters.
    num_nodes
        K, the number of edge nodes; at most the number of rows.
    scheme
        ``"iid"``, ``"dirichlet"`` or ``"shards"``.
    alpha
        Dirichlet concentration (``dirichlet`` only), > 0.
    shards_per_node
        Shards dealt to each node (``shards`` only), >= 1.
    seed
        Seeds the only random generator used.

    Returns
    -------
    list of int64 arrays
        ``num_nodes`` sorted, disjoint, non-empty index arrays whose union is every row.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise DataError(f"labels must be one-dimensional; got shape {labels.shape}")
    if isinstance(num_nodes, bool) or not isinstance(num_nodes, (int, np.integer)) or num_nodes < 1:
        raise DataError(f"num_nodes must be a positive integer; got {num_nodes!r}")
    if num_nodes > len(labels):
        raise DataError(
            f"cannot give each of {num_nodes} nodes at least one of {len(labels)} samples; "
            f"use fewer nodes or more data"
        )
    rng = np.random.default_rng(seed)
    if scheme == "iid":
        parts = np.array_split(rng.permutation(len(labels)), num_nodes)
    elif scheme == "dirichlet":
        if not alpha > 0:
            raise DataError(f"alpha must be > 0 for the Dirichlet partition; got {alpha}")
        parts = _dirichlet(labels, num_nodes, alpha, rng)
    elif scheme == "shards":
        if shards_per_node < 1:
            raise DataError(f"shards_per_node must be >= 1; got {shards_per_node}")
        parts = _shards(labels, num_nodes, shards_per_node, rng)
    else:
        raise DataError(
            f"unknown partition scheme {scheme!r}; expected 'iid', 'dirichlet' or 'shards'"
        )
    return [np.sort(part).astype(np.int64) for part in parts]


def _dirichlet(
    labels: NDArray, num_nodes: int, alpha: float, rng: np.random.Generator
) -> list[NDArray[np.int64]]:
    # Redraw until no node is empty; if that keeps failing (tiny data, tiny alpha), move one
    # random row from the largest node to each empty one. Both steps use ``rng`` only.
    by_class = [np.flatnonzero(labels == name) for name in np.unique(labels)]
    for _ in range(DIRICHLET_ATTEMPTS):
        parts = _dirichlet_draw(by_class, num_nodes, alpha, rng)
        if all(len(part) for part in parts):
            return parts
    for empty in [k for k, part in enumerate(parts) if len(part) == 0]:
        largest = max(range(num_nodes), key=lambda k: len(parts[k]))
        moved = rng.integers(len(parts[largest]))
        parts[empty] = parts[largest][moved : moved + 1]
        parts[largest] = np.delete(parts[largest], moved)
    return parts


def _dirichlet_draw(
    by_class: Sequence[NDArray[np.int64]], num_nodes: int, alpha: float, rng: np.random.Generator
) -> list[NDArray[np.int64]]:
    pieces: list[list[NDArray[np.int64]]] = [[] for _ in range(num_nodes)]
    for rows in by_class:
        shares = rng.dirichlet(np.full(num_nodes, alpha))
        cuts = np.round(np.cumsum(shares)[:-1] * len(rows)).astype(np.int64)
        for node, chunk in enumerate(np.split(rng.permutation(rows), cuts)):
            pieces[node].append(chunk)
    return [np.concatenate(node_pieces) for node_pieces in pieces]


def _shards(
    labels: NDArray, num_nodes: int, shards_per_node: int, rng: np.random.Generator
) -> list[NDArray[np.int64]]:
    num_shards = num_nodes * shards_per_node
    if num_shards > len(labels):
        raise DataError(
            f"{num_nodes} nodes x {shards_per_node} shards per node = {num_shards} shards, "
            f"more than the {len(labels)} samples; lower shards_per_node or num_nodes"
        )
    shuffled = rng.permutation(len(labels))
    by_label = shuffled[np.argsort(labels[shuffled], kind="stable")]
    shards = np.array_split(by_label, num_shards)
    dealt = rng.permutation(num_shards).reshape(num_nodes, shards_per_node)
    return [np.concatenate([shards[s] for s in node_shards]) for node_shards in dealt]


def label_counts(
    labels: NDArray, parts: Sequence[NDArray[np.int64]], num_classes: int | None = None
) -> NDArray[np.int64]:
    """(nodes, classes) matrix of how many rows of each class every node holds.

    ``labels`` must be integer class indices.
    """
    labels = np.asarray(labels)
    width = int(labels.max()) + 1 if num_classes is None else num_classes
    return np.stack([np.bincount(labels[part], minlength=width) for part in parts])


def check_enough_rows(federation: FederationConfig, num_rows: int) -> None:
    """Refuse more nodes than ``num_rows`` training rows can give ``federation.min_node_rows`` each
    (at least one), naming ``federation.num_nodes`` and the number of rows."""
    nodes, at_least = federation.num_nodes, max(1, federation.min_node_rows)
    if nodes * at_least <= num_rows:
        return
    most = num_rows // at_least
    wanted = ("every node needs at least one row" if federation.min_node_rows <= 1 else
              f"federation.min_node_rows = {federation.min_node_rows} asks for {at_least} rows per node, "
              f"{nodes * at_least} in all")
    raise DataError(
        f"federation.num_nodes = {nodes} but the training split has only {num_rows} rows: {wanted}. "
        f"Use at most {most} nodes or more data"
        + (" (or lower federation.min_node_rows)" if federation.min_node_rows > 1 else "")
    )


def check_node_rows(federation: FederationConfig, parts: Sequence[NDArray[np.int64]]) -> None:
    """Refuse a partition that leaves a node fewer than ``federation.min_node_rows`` rows,
    with the node sizes summarised and what to change."""
    sizes = np.array([len(part) for part in parts])
    small = np.flatnonzero(sizes < federation.min_node_rows)
    if not len(small):
        return
    scheme = f"federation.partition = {federation.partition!r}"
    if federation.partition == "dirichlet":
        scheme += f" (federation.alpha = {federation.alpha})"
        change = "raise federation.alpha (a less skewed split), use fewer nodes or more data"
    elif federation.partition == "shards":
        scheme += f" (federation.shards_per_node = {federation.shards_per_node})"
        change = "use fewer nodes or more data"
    else:
        change = "use fewer nodes or more data"
    order = small[np.argsort(sizes[small], kind="stable")]
    shown = ", ".join(f"node {k}: {sizes[k]}" for k in order[:8]) + (" ..." if len(order) > 8 else "")
    raise DataError(
        f"{scheme} with federation.seed = {federation.seed} leaves {len(small)} of {len(sizes)} nodes "
        f"with fewer than federation.min_node_rows = {federation.min_node_rows} training rows ({shown}); "
        f"node sizes: min {sizes.min()}, median {int(np.median(sizes))}, max {sizes.max()}. "
        f"To run it, {change}, or lower federation.min_node_rows (0 turns the check off)"
    )
