"""One round's decision: deltas in, the new global model and the named nodes out."""

import numpy as np
import pytest

from bflsim.aggregators import (
    AGGREGATORS,
    AggregatorError,
    FedAvg,
    Krum,
    Median,
    RoundContext,
    TrimmedMean,
    decide_round,
    stack_deltas,
)
from bflsim.hashing import scores_digest
from bflsim.vectors import flatten


def federation(seed=0, n=7, attackers=(5, 6)):
    """A global model of two arrays and n nodes' returned weights, the attackers far away."""
    rng = np.random.default_rng(seed)
    global_weights = [rng.normal(size=(4, 3)).astype(np.float32), rng.normal(size=3).astype(np.float32)]
    updates = []
    for node in range(n):
        scale = 5.0 if node in attackers else 0.01
        updates.append([(w + rng.normal(scale=scale, size=w.shape)).astype(np.float32) for w in global_weights])
    return global_weights, updates


def test_updates_are_stacked_as_float64_deltas():
    global_weights, updates = federation()

    deltas = stack_deltas(updates, global_weights)

    assert deltas.shape == (7, 15) and deltas.dtype == np.float64
    assert np.array_equal(deltas[2], flatten(updates[2])[0].astype(np.float64) - flatten(global_weights)[0])


def test_krum_picks_the_same_weights_bit_for_bit_as_on_the_weights_themselves():
    global_weights, updates = federation()
    nodes = [10, 11, 12, 13, 14, 15, 16]

    decision = decide_round(Krum(num_malicious=2), nodes, updates, global_weights, [5] * 7, 3.0)
    on_weights = Krum(num_malicious=2)(np.stack([flatten(u)[0] for u in updates]))

    chosen = int(on_weights.selected[0])
    assert decision.selected == (nodes[chosen],)
    assert all(np.array_equal(a, b) for a, b in zip(decision.new_weights, updates[chosen], strict=True))
    assert np.array_equal(decision.selection.scores, on_weights.scores)  # translation-invariant, exactly


def test_the_decision_names_rejected_and_accepted_nodes_and_digests_the_scores():
    global_weights, updates = federation()
    nodes = [0, 1, 2, 3, 4, 5, 6]

    decision = decide_round(Krum(num_malicious=2), nodes, updates, global_weights, [5] * 7, 3.0)

    assert decision.rejected == (5, 6)
    assert decision.accepted == (0, 1, 2, 3, 4)
    assert decision.scores_digest == scores_digest(list(decision.selected), decision.selection.scores)


@pytest.mark.parametrize("rule", [FedAvg(), Median(), TrimmedMean(trim_fraction=0.2)])
def test_averaging_rules_match_the_weights_within_float32_round_off(rule):
    global_weights, updates = federation(seed=1)
    counts = [3, 1, 4, 1, 5, 9, 2]

    decision = decide_round(rule, list(range(7)), updates, global_weights, counts, 3.0)
    on_weights = rule(np.stack([flatten(u)[0] for u in updates]).astype(np.float64), np.array(counts))

    got = flatten(decision.new_weights)[0]
    assert got.dtype == np.float32
    assert np.allclose(got, on_weights.aggregate, rtol=0, atol=1e-6)


def test_every_rule_decides_a_round():
    global_weights, updates = federation(n=9, attackers=(8,))

    d = stack_deltas(updates, global_weights).shape[1]
    rng = np.random.default_rng(3)
    context = RoundContext(server_round=2, seed=5, reference=rng.normal(size=d), previous=rng.normal(size=d),
                           history=rng.normal(size=(9, d)))

    for name, rule in AGGREGATORS.items():
        decision = decide_round(rule(num_malicious=1), list(range(9)), updates, global_weights, [1] * 9, 3.0,
                                context=context)
        assert [w.shape for w in decision.new_weights] == [(4, 3), (3,)], name
        assert set(decision.accepted) | set(decision.rejected) == set(range(9)), name


def test_an_impossible_round_and_a_misshapen_update_are_refused():
    global_weights, updates = federation()
    misshapen = [*updates[:6], [updates[6][0], np.zeros(4, np.float32)]]

    with pytest.raises(AggregatorError, match="Krum cannot tolerate f=2 malicious among n=5"):
        decide_round(Krum(num_malicious=2), range(5), updates[:5], global_weights, [1] * 5, 3.0)
    with pytest.raises(AggregatorError, match=r"update 6 has array shapes \[\(4, 3\), \(4,\)\]"):
        decide_round(FedAvg(), range(7), misshapen, global_weights, [1] * 7, 3.0)
