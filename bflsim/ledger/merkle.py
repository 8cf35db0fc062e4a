"""Merkle trees of a batched-mode registry (v3): leaves, roots and inclusion proofs.

In batched mode the registry keeps one root per set instead of one entry per node
(contracts/README.md): the federation (:func:`node_leaf`), the nodes' signed data
registrations (:func:`data_leaf`), a round's cohort (:func:`cohort_leaf`) and a round's signed
updates (:func:`update_leaf`). A leaf is ``keccak256(keccak256(abi.encode(fields)))``: hashing
twice keeps a leaf from ever equalling an inner node (a 64-byte pair), so no inner node can be
passed off as a leaf. Inner nodes hash their two children in sorted order, so a proof is just
the list of siblings and the contract's ``proves(root, leaf, proof)`` checks it without
directions; an odd node at the end of a level moves up unchanged. The empty tree's root is 32
zero bytes. Leaves are kept in the order given (the callers sort them by node index), so the
same set always gives the same root.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from eth_abi import encode as abi_encode
from eth_utils import keccak, to_checksum_address

__all__ = ["MerkleTree", "cohort_leaf", "data_leaf", "leaf", "node_leaf", "update_leaf", "verify"]

EMPTY_ROOT = bytes(32)


def leaf(types: Sequence[str], values: Sequence[object]) -> bytes:
    """``keccak256(keccak256(abi.encode(values)))`` for the ABI ``types``."""
    return keccak(keccak(abi_encode(list(types), list(values))))


def node_leaf(index: int, address: str) -> bytes:
    """A member of the federation: its index and its account."""
    return leaf(["uint32", "address"], [index, to_checksum_address(address)])


def cohort_leaf(index: int) -> bytes:
    """A member of a round's cohort."""
    return leaf(["uint32"], [index])


def data_leaf(index: int, data_digest: bytes, timestamp: int, num_samples: int, signature: bytes) -> bytes:
    """A node's data registration and its EIP-712 signature (``Data``,
    :func:`bflsim.ledger.identity.sign_data_typed`)."""
    return leaf(["uint32", "bytes32", "uint64", "uint32", "bytes32"],
                [index, data_digest, timestamp, num_samples, keccak(signature)])


def update_leaf(index: int, update_digest: bytes, num_samples: int, signature: bytes, accepted: bool) -> bytes:
    """A node's signed update (``Update``, :func:`bflsim.ledger.identity.sign_update_typed`) and
    whether it entered the aggregate."""
    return leaf(["uint32", "bytes32", "uint32", "bytes32", "bool"],
                [index, update_digest, num_samples, keccak(signature), accepted])


def _pair(a: bytes, b: bytes) -> bytes:
    return keccak(a + b) if a < b else keccak(b + a)


@dataclass(frozen=True)
class MerkleTree:
    """A tree over ``leaves`` (32-byte hashes, in the order given)."""

    leaves: tuple[bytes, ...]
    levels: tuple[tuple[bytes, ...], ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        level = tuple(bytes(x) for x in self.leaves)
        if any(len(x) != 32 for x in level):
            raise ValueError("Merkle leaves are 32-byte hashes")
        levels = [level]
        while len(level) > 1:
            level = tuple(_pair(level[i], level[i + 1]) if i + 1 < len(level) else level[i]
                          for i in range(0, len(level), 2))
            levels.append(level)
        object.__setattr__(self, "levels", tuple(levels))

    @property
    def root(self) -> bytes:
        return self.levels[-1][0] if self.leaves else EMPTY_ROOT

    def proof(self, position: int) -> list[bytes]:
        """The siblings from leaf ``position`` up to the root."""
        if not 0 <= position < len(self.leaves):
            raise IndexError(f"leaf {position} of a tree of {len(self.leaves)}")
        siblings = []
        for level in self.levels[:-1]:
            sibling = position ^ 1
            if sibling < len(level):
                siblings.append(level[sibling])
            position //= 2
        return siblings


def verify(root: bytes, leaf_hash: bytes, proof: Sequence[bytes]) -> bool:
    """Whether ``proof`` leads from ``leaf_hash`` to ``root`` (the contract's ``proves``)."""
    h = bytes(leaf_hash)
    for sibling in proof:
        h = _pair(h, bytes(sibling))
    return h == bytes(root)
