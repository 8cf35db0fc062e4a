"""The omniscient and adaptive model-poisoning attacks: Min-Max, Min-Sum, Fang's attacks, Mimic.

Hand-computed fixtures on tiny matrices, properties of each attack's defining condition,
and one qualitative effect per attack on bflsim's own aggregators over synthetic clouds.
"""

import math

import numpy as np
import pytest

from bflsim.aggregators import Median, MultiKrum, TrimmedMean, krum
from bflsim.attacks import (
    ATTACKS,
    PERTURBATIONS,
    AttackError,
    AttackInput,
    DefenceView,
    alie,
    alie_z,
    fang_krum,
    fang_lambda_bound,
    fang_trim,
    fang_trim_intervals,
    mimic,
    mimic_target,
    min_max,
    min_sum,
)
from bflsim.attacks.agnostic import perturbation, search_gamma

# mean (2, 0, 0); largest pairwise squared distance 16 (rows 2 and 3); sums of squared
# distances per row 14, 14, 26, 26
FIXTURE = np.array([[3.0, 0.0, 0.0], [1.0, 0.0, 0.0], [2.0, 2.0, 0.0], [2.0, -2.0, 0.0]])


def gamma_of(sent, benign, kind):
    """The gamma with sent = mean + gamma * p."""
    p = perturbation(benign, kind)
    return float((sent - benign.mean(axis=0)) @ p / (p @ p))


def max_sq_distance(point, benign):
    return ((benign - point) ** 2).sum(axis=1).max()


def sum_sq_distance(point, benign):
    return ((benign - point) ** 2).sum()


def pairwise_sq(benign):
    return ((benign[:, None, :] - benign[None, :, :]) ** 2).sum(axis=2)


def cloud(seed, rows=16, d=50, loc=0.9):
    return np.random.default_rng(seed).normal(loc, 1.0, size=(rows, d))


def omniscient_input(benign, coalition=None, defence=None, seed=0):
    coalition = np.zeros((2, benign.shape[1])) if coalition is None else coalition
    return AttackInput(coalition[0], np.random.default_rng(seed), coalition=coalition,
                       honest=np.vstack([coalition, benign]), benign=benign,
                       num_nodes=len(benign) + len(coalition), defence=defence)


# --- Min-Max and Min-Sum -------------------------------------------------------------------


def test_perturbations_are_the_papers_directions():
    assert perturbation(FIXTURE, "unit_vec").tolist() == [-1.0, 0.0, 0.0]
    assert perturbation(FIXTURE, "sign").tolist() == [-1.0, 0.0, 0.0]
    # per-column sample std: (3, 1, 2, 2) -> sqrt(2/3); (0, 0, 2, -2) -> sqrt(8/3); zeros -> 0
    np.testing.assert_allclose(perturbation(FIXTURE, "std"), [-math.sqrt(2 / 3), -math.sqrt(8 / 3), 0.0])
    assert perturbation(np.array([[1.0, -1.0], [-1.0, 1.0]]), "unit_vec").tolist() == [0.0, 0.0]  # zero mean


def test_min_max_by_hand():
    # m = (2 - g, 0, 0): squared distances (1 + g)^2, (1 - g)^2, g^2 + 4, g^2 + 4; the largest
    # is (1 + g)^2 once g > 1.5, and (1 + g)^2 <= 16 gives g = 3: m = (-1, 0, 0)
    sent = min_max(FIXTURE, "unit_vec")

    np.testing.assert_allclose(sent, [-1.0, 0.0, 0.0], atol=1e-4)
    assert max_sq_distance(sent, FIXTURE) <= 16.0


def test_min_sum_by_hand():
    # sum_i ||mean + g p - x_i||^2 = sum_i ||mean - x_i||^2 + n g^2 ||p||^2 = 10 + 4 g^2 <= 26: g = 2
    sent = min_sum(FIXTURE, "unit_vec")

    np.testing.assert_allclose(sent, [0.0, 0.0, 0.0], atol=1e-4)
    assert sum_sq_distance(sent, FIXTURE) <= 26.0


@pytest.mark.parametrize("kind", PERTURBATIONS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_min_max_keeps_its_condition_and_a_larger_gamma_breaks_it(kind, seed):
    benign = cloud(seed, rows=6, d=3, loc=0.5)
    bound = pairwise_sq(benign).max()

    sent = min_max(benign, kind)
    gamma = gamma_of(sent, benign, kind)
    further = benign.mean(axis=0) + (gamma + 1e-3) * perturbation(benign, kind)

    assert 0 < gamma < 20  # inside the search's reach, so the boundary was found
    assert max_sq_distance(sent, benign) <= bound
    assert max_sq_distance(further, benign) > bound


@pytest.mark.parametrize("kind", PERTURBATIONS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_min_sum_keeps_its_condition_and_a_larger_gamma_breaks_it(kind, seed):
    benign = cloud(seed, rows=6, d=3, loc=0.5)
    bound = pairwise_sq(benign).sum(axis=1).max()
    p = perturbation(benign, kind)
    exact = math.sqrt((bound - sum_sq_distance(benign.mean(axis=0), benign)) / (len(benign) * (p @ p)))

    sent = min_sum(benign, kind)
    gamma = gamma_of(sent, benign, kind)

    assert gamma == pytest.approx(exact, abs=2e-5)  # closed form: the cross term vanishes at the mean
    assert sum_sq_distance(sent, benign) <= bound
    assert sum_sq_distance(benign.mean(axis=0) + (gamma + 1e-3) * p, benign) > bound


def test_the_search_is_the_authors_halving_and_stops_at_twice_gamma_init():
    assert search_gamma(lambda g: g <= 3.0) == pytest.approx(3.0, abs=1e-5)
    assert search_gamma(lambda g: True) == pytest.approx(20.0, abs=1e-4)  # never beyond 2 * gamma_init
    assert search_gamma(lambda g: False) == 0.0
    assert search_gamma(lambda g: g <= 30.0, gamma_init=100.0, tolerance=1e-3) == pytest.approx(30.0, abs=2e-3)


def test_min_max_and_min_sum_use_the_benign_rows_only():
    coalition = np.full((2, 3), 50.0)  # the attackers' own honest updates, far off: not counted

    sent_max = ATTACKS["min_max"]().poison_update(omniscient_input(FIXTURE, coalition))
    sent_sum = ATTACKS["min_sum"](perturbation="unit_vec").poison_update(omniscient_input(FIXTURE, coalition))

    np.testing.assert_allclose(sent_max, [-1.0, 0.0, 0.0], atol=1e-4)
    np.testing.assert_allclose(sent_sum, [0.0, 0.0, 0.0], atol=1e-4)


def test_min_max_and_min_sum_move_robust_aggregates_further_than_alie():
    """Shejwalkar & Houmansadr (NDSS 2021): Min-Max and Min-Sum hurt the trimmed mean and
    Multi-Krum more than ALIE (LIE) does; here, as far from the benign mean again and more.
    (On these clouds the coordinate-wise median moves about as much under both.)"""
    attackers, rules = 4, (TrimmedMean(num_malicious=4, trim_fraction=0.2), MultiKrum(num_malicious=4))
    for seed in range(3):
        benign = cloud(seed)
        own = np.random.default_rng(100 + seed).normal(0.9, 1.0, size=(attackers, 50))
        mean = benign.mean(axis=0)
        z = alie_z(len(benign) + attackers, attackers)

        def shift(sent, rule, benign=benign, mean=mean):
            return np.linalg.norm(rule(np.vstack([np.tile(sent, (attackers, 1)), benign])).aggregate - mean)

        for rule in rules:
            assert shift(min_max(benign), rule) > 1.25 * shift(alie(own, z), rule), (seed, rule.name)
            assert shift(min_sum(benign), rule) > 1.25 * shift(alie(own, z), rule), (seed, rule.name)


# --- Fang's attack on Krum ------------------------------------------------------------------


def test_fang_lambda_bound_by_hand():
    # a 3 x 4 rectangle: every row's 2 nearest others are 3 and 4 away (sum 7); the largest
    # norm is 5; with f = 0: 7 / ((4 - 0 - 1) sqrt 3) + 5 / sqrt 3
    rows = np.array([[0.0, 0.0, 0.0], [3.0, 0.0, 0.0], [0.0, 4.0, 0.0], [3.0, 4.0, 0.0]])

    assert fang_lambda_bound(rows, 0) == pytest.approx((7 / 3 + 5) / math.sqrt(3))
    assert fang_lambda_bound(rows, 2) == pytest.approx(5 / math.sqrt(3))  # no neighbour left to count


def test_fang_krum_is_minus_lambda_times_the_benign_sign():
    benign = cloud(0)

    sent = fang_krum(benign, num_attackers=4, num_malicious=4)
    lam = -sent[0] / np.sign(benign.mean(axis=0))[0]
    bound = fang_lambda_bound(benign, 4)

    np.testing.assert_allclose(sent, -lam * np.sign(benign.mean(axis=0)))
    assert 0 < lam <= bound
    assert math.log2(bound / lam) == pytest.approx(round(math.log2(bound / lam)))  # halved from the bound


@pytest.mark.parametrize("seed", range(5))
def test_fang_krum_is_selected_by_krum_where_minus_the_mean_is_not(seed):
    benign, attackers = cloud(seed), 4
    record = ATTACKS["fang_krum"]()
    defence = DefenceView("krum", {}, assumed_malicious=attackers)
    coalition = np.random.default_rng(seed + 50).normal(0.9, 1.0, size=(attackers, 50))

    sent = record.poison_update(omniscient_input(benign, coalition, defence))
    with_fang = krum(np.vstack([np.tile(sent, (attackers, 1)), benign]), attackers)
    with_naive = krum(np.vstack([np.tile(-benign.mean(axis=0), (attackers, 1)), benign]), attackers)

    assert with_fang.selected.tolist()[0] < attackers  # a crafted row wins
    assert with_naive.selected.tolist()[0] >= attackers  # -mean is too far: a benign row wins
    # the published effect: Krum's aggregate now points against the benign direction
    assert with_fang.aggregate @ benign.mean(axis=0) < 0 < with_naive.aggregate @ benign.mean(axis=0)


def test_fang_krum_sends_the_last_lambda_below_the_threshold_when_krum_never_selects_it():
    # a tight cloud far from 0: every -lambda * s is farther from it than its rows are from each other
    benign = np.random.default_rng(3).normal(5.0, 0.1, size=(8, 10))

    sent = fang_krum(benign, num_attackers=2, num_malicious=2, threshold=1e-3)
    lam = -sent[0] / np.sign(benign.mean(axis=0))[0]

    assert 5e-4 <= lam < 1e-3  # halved until below the threshold, then sent anyway
    assert krum(np.vstack([sent, sent, benign]), 2).selected.tolist()[0] >= 2


def test_fang_krum_refuses_a_round_krum_cannot_take():
    with pytest.raises(AttackError, match=r"assumed f=3, which needs n > 2f \+ 2 updates; the round has n=6"):
        fang_krum(cloud(0, rows=4), num_attackers=2, num_malicious=3)


# --- Fang's attack on trimmed mean ------------------------------------------------------------


def test_fang_trim_intervals_by_hand():
    # column means: 2 (> 0: push down), -7/3 and -1/6 (< 0: push up), 2/3 (> 0: push down)
    rows = np.array([[1.0, -2.0, 0.5, -1.0], [3.0, -1.0, -1.0, 2.0], [2.0, -4.0, 0.0, 1.0]])

    low, high = fang_trim_intervals(rows, b=2.0)

    assert low.tolist() == [0.5, -1.0, 0.5, -2.0]   # w_min/b, w_max, w_max, b*w_min
    assert high.tolist() == [1.0, -0.5, 1.0, -1.0]  # w_min, w_max/b, b*w_max, w_min


@pytest.mark.parametrize("b", [1.5, 2.0, 4.0])
def test_fang_trim_values_lie_beyond_the_benign_extremes_against_the_benign_direction(b):
    benign = cloud(1, rows=10, d=200, loc=0.0)
    low, high = fang_trim_intervals(benign, b)
    up = benign.mean(axis=0) < 0

    sent = [fang_trim(benign, np.random.default_rng(seed), b) for seed in range(4)]

    for values in sent:
        assert np.all((low <= values) & (values <= high))
        assert np.all(np.where(up, values >= benign.max(axis=0), values <= benign.min(axis=0)))
        assert np.all(np.abs(values) <= b * np.abs(benign).max(axis=0) + 1e-12)
    assert not np.array_equal(sent[0], sent[1])  # each attacker draws its own values


def test_fang_trim_record_draws_from_the_attackers_generator():
    benign = cloud(2, rows=6, d=5)
    record = ATTACKS["fang_trim"](b=3.0)

    a = record.poison_update(omniscient_input(benign, seed=7))
    b = record.poison_update(omniscient_input(benign, seed=7))

    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, fang_trim(benign, np.random.default_rng(7), 3.0))


def test_fang_trim_drags_trimmed_mean_and_median_against_the_benign_direction():
    """Fang et al.: the trimmed mean (and median) move opposite to the benign direction, far more
    than under Gaussian noise from as many attackers."""
    attackers = 4
    for seed in range(3):
        benign = cloud(seed)
        mean, sign = benign.mean(axis=0), np.sign(benign.mean(axis=0))
        crafted = np.stack([fang_trim(benign, np.random.default_rng(100 + i)) for i in range(attackers)])
        noise = np.random.default_rng(200 + seed).normal(0.0, 1.0, size=(attackers, 50))
        for rule in (TrimmedMean(num_malicious=attackers, trim_fraction=0.2), Median(num_malicious=attackers)):
            clean = rule(benign).aggregate
            hit = rule(np.vstack([crafted, benign])).aggregate
            noisy = rule(np.vstack([noise, benign])).aggregate

            assert np.all((hit - clean) * sign <= 1e-12)  # every coordinate moves against s_j, or stays
            assert np.linalg.norm(hit - mean) > 1.3 * np.linalg.norm(noisy - mean)


# --- Mimic -------------------------------------------------------------------------------------


def test_mimic_target_by_hand():
    # centred rows (0,0,0), (-1,1,0), (-2,0,0), (-1,-1,0), (4,0,0): the top direction is the
    # x-axis (spread 22 against 2), the largest |projection| is row 4's
    rows = np.array([[1.0, 0, 0], [0, 1, 0], [-1, 0, 0], [0, -1, 0], [5, 0, 0]])

    assert mimic_target(rows) == 4
    assert mimic_target(-rows) == 4  # the sign of the direction does not matter
    assert mimic(rows).tolist() == [5.0, 0.0, 0.0]
    assert mimic(rows, target=1).tolist() == [0.0, 1.0, 0.0]
    assert mimic_target(np.ones((3, 2))) == 0  # no spread: the first row


def test_mimic_sends_a_benign_row():
    benign = cloud(4, rows=7, d=12)

    sent = ATTACKS["mimic"]().poison_update(omniscient_input(benign))
    fixed = ATTACKS["mimic"](target=2).poison_update(omniscient_input(benign))

    assert any(np.array_equal(sent, row) for row in benign)
    np.testing.assert_array_equal(fixed, benign[2])
    with pytest.raises(AttackError, match=r"target must index one of the round's 7 benign updates \(0..6\); got 7"):
        ATTACKS["mimic"](target=7).poison_update(omniscient_input(benign))


def test_mimic_pulls_robust_aggregates_towards_the_mimicked_node_on_heterogeneous_data():
    """Karimireddy et al.: on heterogeneous data the copies make the defence over-weight one
    benign node (here one of a minority cluster) against attackers sending honest updates."""
    attackers, d = 4, 20
    axis = np.eye(d)[0]
    for seed in range(3):
        rng = np.random.default_rng(seed)
        benign = np.vstack([rng.normal(0, 1, (12, d)) + 3 * axis, rng.normal(0, 1, (4, d)) - 3 * axis])
        own = rng.normal(0, 1, (attackers, d)) + 3 * axis
        target = mimic_target(benign)
        copies = np.tile(mimic(benign), (attackers, 1))

        assert target >= 12  # the heuristic picks a minority node
        for rule in (Median(num_malicious=attackers), TrimmedMean(num_malicious=attackers, trim_fraction=0.2)):
            hit = rule(np.vstack([copies, benign])).aggregate
            clean = rule(np.vstack([own, benign])).aggregate
            assert np.linalg.norm(hit - benign[target]) < np.linalg.norm(clean - benign[target]) - 0.5


# --- what they need, parameters, registry ------------------------------------------------------


@pytest.mark.parametrize(("name", "threat_model"), [("min_max", "omniscient"), ("min_sum", "omniscient"),
                                                    ("mimic", "omniscient"), ("fang_krum", "adaptive"),
                                                    ("fang_trim", "adaptive")])
def test_every_attack_refuses_missing_inputs_naming_its_threat_model(name, threat_model):
    record = ATTACKS[name]()
    coalition = np.zeros((2, 3))

    assert record.threat_model == threat_model
    with pytest.raises(AttackError, match=f"threat model '{threat_model}'"):
        record.poison_update(AttackInput(np.zeros(3), np.random.default_rng(0)))
    with pytest.raises(AttackError, match=f"threat model '{threat_model}'"):
        record.poison_update(AttackInput(np.zeros(3), np.random.default_rng(0), coalition=coalition))
    with pytest.raises(AttackError, match="at least one benign node"):
        record.poison_update(AttackInput(np.zeros(3), np.random.default_rng(0), coalition=coalition,
                                         honest=coalition, benign=np.empty((0, 3)), num_nodes=2,
                                         defence=DefenceView("krum", {}, 0)))


def test_fang_krum_refuses_a_round_without_the_defence():
    benign = cloud(0, rows=8, d=3)

    with pytest.raises(AttackError, match=r"defence's assumed f.*\(threat model 'adaptive'\)"):
        ATTACKS["fang_krum"]().poison_update(omniscient_input(benign))


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("min_max", {"perturbation": "cosine"}, r"perturbation must be one of \['unit_vec', 'std', 'sign'\]; got 'cosine'"),
        ("min_sum", {"gamma_init": 0.0}, "gamma_init must be a finite number > 0; got 0.0"),
        ("min_sum", {"gamma_init": float("inf")}, "gamma_init must be a finite number > 0"),
        ("min_max", {"tolerance": -1e-5}, "tolerance must be a finite number > 0; got -1e-05"),
        ("fang_krum", {"threshold": 0}, "threshold must be a finite number > 0; got 0"),
        ("fang_trim", {"b": 1.0}, "b must be a finite number > 1; got 1.0"),
        ("fang_trim", {"b": "2"}, "b must be a finite number > 1; got '2'"),
        ("mimic", {"target": -1}, r"target must be an integer >= 0 \(or unset for the paper's heuristic\); got -1"),
        ("mimic", {"target": 1.5}, "target must be an integer >= 0"),
        ("mimic", {"target": True}, "target must be an integer >= 0"),
    ],
)
def test_parameters_are_refused_with_their_names(name, params, message):
    with pytest.raises(AttackError, match=message):
        ATTACKS[name](**params)


def test_the_config_names_the_key_of_a_refused_parameter():
    from bflsim.config import ConfigError, parse_experiment

    base = {"experiment": {"name": "zoo", "kind": "federated"}, "data": {"dataset": "synthetic"},
            "federation": {"num_nodes": 8}, "aggregator": {"name": "krum"}, "ledger": {"backend": "none"}}
    config = parse_experiment({**base, "attack": {"name": "min_max", "num_malicious": 2, "threat_model": "omniscient",
                                                  "params": {"perturbation": "sign"}}})

    assert config.attack.record == ATTACKS["min_max"](perturbation="sign")
    assert dict(config.attack.params) == {"perturbation": "sign", "gamma_init": 10.0, "tolerance": 1e-5}
    with pytest.raises(ConfigError, match="attack.params.perturbation must be one of"):
        parse_experiment({**base, "attack": {"name": "min_sum", "threat_model": "omniscient", "params": {"perturbation": "flip"}}})
    with pytest.raises(ConfigError, match="attack.params.target must be an integer"):
        parse_experiment({**base, "attack": {"name": "mimic", "threat_model": "omniscient", "params": {"target": 1.5}}})


def test_the_catalog_lists_them_with_parameters_and_references():
    from bflsim.catalog import catalog_lines

    lines = {line.split()[0]: line for line in catalog_lines() if line.startswith("  ")}

    assert "params: perturbation='unit_vec', gamma_init=10.0, tolerance=1e-05" in lines["min_max"]
    assert "threat model adaptive" in lines["fang_krum"] and "Fang et al., USENIX Security 2020" in lines["fang_krum"]
    assert "params: b=2.0" in lines["fang_trim"]
    assert "params: target=None" in lines["mimic"] and "ICLR 2022" in lines["mimic"]
    assert "Shejwalkar & Houmansadr, NDSS 2021" in lines["min_sum"]


# --- through the edge node ----------------------------------------------------------------------


def test_an_omniscient_node_gets_the_benign_updates_of_its_round():
    """Mimic with target 0 sends exactly what the lowest-id benign node of the cohort trains."""
    from bflsim.config import parse_experiment
    from bflsim.edge_node import fit, load_data, train_locally
    from bflsim.models import initial_weights

    config = parse_experiment({
        "experiment": {"name": "zoo", "kind": "federated"},
        "data": {"dataset": "synthetic", "synthetic": {"num_samples": 600}},
        "models": {"names": ["dnn"], "dnn": {"hidden_units": [8], "dropout": 0.0}},
        "federation": {"num_nodes": 6, "rounds": 1},
        "aggregator": {"name": "fedavg"},
        "ledger": {"backend": "none"},
        "attack": {"name": "mimic", "num_malicious": 2, "threat_model": "omniscient", "params": {"target": 0}},
    })
    bad, cohort = config.malicious_nodes(1).tolist(), list(range(6))
    first_benign = min(set(cohort) - set(bad))
    data = load_data(config.data)
    weights = initial_weights(config.models, config.train, data.num_features, data.num_classes)

    sent = train_locally(config, bad[0], 1, weights, cohort=cohort).weights
    honest = fit(config, first_benign, 1, weights)[0]

    for a, b in zip(sent, honest, strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


def test_an_adaptive_node_is_told_the_defence_and_sends_what_fang_krum_computes():
    """Fang on Krum at the edge node: the benign deltas, the coalition's size and the
    defence's assumed f (here set apart from the true count) reach the attack."""
    from bflsim.config import parse_experiment
    from bflsim.edge_node import fit, load_data, train_locally
    from bflsim.models import initial_weights
    from bflsim.vectors import flatten

    config = parse_experiment({
        "experiment": {"name": "zoo", "kind": "federated"},
        "data": {"dataset": "synthetic", "synthetic": {"num_samples": 800}},
        "models": {"names": ["dnn"], "dnn": {"hidden_units": [8], "dropout": 0.0}},
        "federation": {"num_nodes": 8, "rounds": 1},
        "aggregator": {"name": "krum", "assumed_malicious": 1},
        "ledger": {"backend": "none"},
        "attack": {"name": "fang_krum", "num_malicious": 2, "threat_model": "adaptive"},
    })
    bad, cohort = config.malicious_nodes(1).tolist(), list(range(8))
    data = load_data(config.data)
    weights = initial_weights(config.models, config.train, data.num_features, data.num_classes)
    start = flatten(weights)[0]
    benign = np.stack([flatten(fit(config, node, 1, weights)[0])[0] - start for node in cohort if node not in bad])

    sent = flatten(train_locally(config, bad[1], 1, weights, cohort=cohort).weights)[0] - start

    np.testing.assert_allclose(sent, fang_krum(benign, num_attackers=2, num_malicious=1), rtol=0, atol=1e-6)
