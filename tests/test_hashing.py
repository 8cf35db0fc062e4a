"""Canonical digests: known answers, sensitivity to dtype/shape/values, layout independence."""

import hashlib

import numpy as np
import pytest

from bflsim.hashing import (
    data_digest,
    digest_hex,
    evaluation_digest,
    run_digest,
    scores_digest,
    split_digest,
    weights_digest,
)

# Known answers. Computed once with bflsim.hashing and cross-checked against the canonical
# bytes spelled out by hand in test_weights_digest_matches_hand_built_bytes below; if one of
# these changes, every digest already written on a chain stops verifying: bump the tag (v2).
TINY = np.arange(6, dtype="<f4").reshape(2, 3)
TINY_WEIGHTS_HEX = "769c66e80ab375fd5d9ac7e93612902d0dba6e7ea32230d3c6af71b11724e8c5"
TINY_DATA_HEX = "22ac6ac5fc9b7d076abb0e631b9db4ae62934b950b6dc419bed4e98819104723"
TINY_SCORES_HEX = "ce8eb60ff8dd524894438328a1b69c281102faf2a1f628452dc6221abe563fb6"


def test_weights_digest_known_answer():
    assert weights_digest([TINY]).hex() == TINY_WEIGHTS_HEX


def test_weights_digest_matches_hand_built_bytes():
    canonical = (
        b"bflsim/weights/v1\x00"
        + (1).to_bytes(4, "big")  # one array
        + bytes([3]) + b"<f4"  # dtype
        + bytes([2]) + (2).to_bytes(8, "big") + (3).to_bytes(8, "big")  # shape
        + (24).to_bytes(8, "big") + TINY.tobytes()  # 6 float32 values, C order
    )

    assert weights_digest([TINY]) == hashlib.sha256(canonical).digest()


def test_data_and_scores_digest_known_answers():
    x = np.array([[1, 2], [3, 4]], dtype=np.int64)

    assert data_digest(x, None, timestamp=1_700_000_000, node_id=7, version="v1").hex() == TINY_DATA_HEX
    assert scores_digest([0, 2], [0.5, 1.5, 2.5]).hex() == TINY_SCORES_HEX


def test_data_digest_v1_is_sha256_of_canonical_x_timestamp_node():
    x = np.array([[1, 2], [3, 4]], dtype=np.int64)
    canonical_x = (
        b"bflsim/data/v1\x00" + (1).to_bytes(4, "big") + bytes([3]) + b"<i8"
        + bytes([2]) + (2).to_bytes(8, "big") + (2).to_bytes(8, "big")
        + (32).to_bytes(8, "big") + x.astype("<i8").tobytes()
    )

    expected = hashlib.sha256(
        canonical_x + (1_700_000_000).to_bytes(8, "big") + (7).to_bytes(4, "big")
    ).digest()

    assert data_digest(x, None, 1_700_000_000, 7, version="v1") == expected


def test_data_digest_v2_covers_features_and_labels():
    x = np.array([[1, 2], [3, 4]], dtype=np.int64)
    y = np.array([0, 1], dtype=np.int64)
    canonical = (
        b"bflsim/data/v2\x00" + (2).to_bytes(4, "big")
        + bytes([3]) + b"<i8" + bytes([2]) + (2).to_bytes(8, "big") + (2).to_bytes(8, "big")
        + (32).to_bytes(8, "big") + x.astype("<i8").tobytes()
        + bytes([3]) + b"<i8" + bytes([1]) + (2).to_bytes(8, "big")
        + (16).to_bytes(8, "big") + y.astype("<i8").tobytes()
    )
    expected = hashlib.sha256(canonical + (5).to_bytes(8, "big") + (3).to_bytes(4, "big")).digest()

    assert data_digest(x, y, 5, 3) == expected
    assert data_digest(x, y[::-1].copy(), 5, 3) != expected  # relabelled rows
    assert data_digest(x, None, 5, 3, version="v1") != expected


def test_split_and_evaluation_digests_see_every_value():
    x, y = np.ones((3, 2), np.float32), np.array([0, 1, 1])
    cm = np.array([[5, 1], [0, 4]])

    assert split_digest(x, y) != split_digest(x, np.array([0, 1, 0]))
    assert evaluation_digest(3, cm) != evaluation_digest(4, cm)
    assert evaluation_digest(3, cm) != evaluation_digest(3, cm.T)
    assert evaluation_digest(3, cm.astype(np.int32)) == evaluation_digest(3, cm)  # counts, any int dtype


def test_run_digest_is_order_free_and_sees_every_fact():
    facts = {"config": "0x01", "git_commit": "abc", "run_nonce": "0x02"}

    assert run_digest(facts) == run_digest(dict(reversed(facts.items())))
    assert run_digest({**facts, "run_nonce": "0x03"}) != run_digest(facts)
    expected = hashlib.sha256(
        b"bflsim/run/v1\x00" + b'{"config":"0x01","git_commit":"abc","run_nonce":"0x02"}'
    ).digest()
    assert run_digest(facts) == expected


@pytest.mark.parametrize(
    "changed",
    [
        TINY.astype(np.float64),  # dtype
        TINY.reshape(3, 2),  # shape, same bytes
        TINY.reshape(6),  # rank
        np.where(TINY == 5, np.nextafter(TINY, np.float32(9)), TINY),  # one value, 1 ulp
    ],
    ids=["dtype", "shape", "rank", "value"],
)
def test_weights_digest_changes_with_dtype_shape_and_values(changed):
    assert weights_digest([changed]) != weights_digest([TINY])


def test_weights_digest_sees_array_boundaries_and_order():
    a, b = np.zeros(2, np.float32), np.ones(2, np.float32)

    assert weights_digest([a, b]) != weights_digest([b, a])
    assert weights_digest([a, b]) != weights_digest([np.concatenate([a, b])])


def test_fortran_order_and_big_endian_hash_like_c_order_copy():
    rng = np.random.default_rng(0)
    c_order = rng.normal(size=(4, 5)).astype(np.float32)
    fortran = np.asfortranarray(c_order)
    big_endian = c_order.astype(">f4")
    strided = np.arange(40, dtype=np.float32).reshape(4, 10)[:, ::2]

    assert not fortran.flags.c_contiguous
    assert weights_digest([fortran]) == weights_digest([c_order])
    assert weights_digest([big_endian]) == weights_digest([c_order])
    assert weights_digest([strided]) == weights_digest([strided.copy()])


def test_data_digest_binds_timestamp_and_node():
    x = np.ones((3, 4), np.float32)
    y = np.zeros(3, np.int64)
    base = data_digest(x, y, 100, 1)

    assert data_digest(x, y, 101, 1) != base
    assert data_digest(x, y, 100, 2) != base
    assert data_digest(np.asfortranarray(x), y, 100, 1) == base


def test_kinds_of_digest_never_collide():
    x = np.ones(3, np.float64)

    assert weights_digest([x]) != scores_digest([], x)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: data_digest(np.ones(2), np.ones(2), -1, 0), "timestamp"),
        (lambda: data_digest(np.ones(2), np.ones(2), 0, 2**32), "node_id"),
        (lambda: data_digest(np.ones(2), None, 0, 0), "labels"),
        (lambda: data_digest(np.ones(2), None, 0, 0, version="v3"), "version"),
        (lambda: evaluation_digest(1, np.ones((2, 3))), "square"),
        (lambda: run_digest({"seed": 1}), "string"),
        (lambda: weights_digest([np.array([object()])]), "object"),
        (lambda: digest_hex(b"short"), "32 bytes"),
    ],
)
def test_bad_input_fails_with_a_sentence(call, message):
    with pytest.raises((ValueError, TypeError), match=message):
        call()


def test_digest_hex():
    assert digest_hex(bytes(32)) == "0x" + "00" * 32
