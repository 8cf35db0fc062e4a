"""Poisoning attacks and the draw of malicious nodes."""

from statistics import NormalDist

import numpy as np
import pytest

from bflsim.attacks import (
    ATTACKS,
    Attack,
    AttackError,
    AttackInput,
    Classes,
    Gaussian,
    Scaling,
    SignFlip,
    draw_malicious,
    gaussian,
    scaling,
    sign_flip,
)

D = 200_000  # large enough that sample mean and std sit within ~0.01 of the truth


def honest(d=D, dtype=np.float32):
    return np.random.default_rng(99).normal(loc=3.0, scale=0.1, size=d).astype(dtype)


# --- gaussian ----------------------------------------------------------------------------


def test_gaussian_replace_has_the_requested_mean_and_std():
    # Standard errors: sigma / sqrt(D) ~ 0.0045 for the mean, ~ 0.0032 for the std.
    update = honest()

    poisoned = gaussian(update, mode="replace", mu=0.5, sigma=2.0, rng=np.random.default_rng(0))

    assert poisoned.shape == update.shape and poisoned.dtype == np.float32
    assert poisoned.mean() == pytest.approx(0.5, abs=0.03)
    assert poisoned.std() == pytest.approx(2.0, abs=0.03)


def test_gaussian_replace_does_not_depend_on_the_input():
    first, second = honest(), -7.0 * honest()

    a = gaussian(first, mode="replace", sigma=1.0, rng=np.random.default_rng(1))
    b = gaussian(second, mode="replace", sigma=1.0, rng=np.random.default_rng(1))

    assert np.array_equal(a, b)


def test_gaussian_add_is_the_input_plus_the_same_noise():
    update = honest(dtype=np.float64)

    noise = gaussian(update, mode="replace", mu=0.2, sigma=0.5, rng=np.random.default_rng(2))
    added = gaussian(update, mode="add", mu=0.2, sigma=0.5, rng=np.random.default_rng(2))

    assert np.allclose(added - update, noise, rtol=0, atol=1e-12)
    assert (added - update).std() == pytest.approx(0.5, abs=0.01)


def test_gaussian_is_reproducible_from_the_seed_and_varies_across_seeds():
    update = honest(d=100)

    a = gaussian(update, mode="add", rng=np.random.default_rng(3))
    b = gaussian(update, mode="add", rng=np.random.default_rng(3))
    c = gaussian(update, mode="add", rng=np.random.default_rng(4))

    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_gaussian_with_zero_sigma_is_constant_mu():
    poisoned = gaussian(honest(d=10), mode="replace", mu=1.5, sigma=0.0,
                        rng=np.random.default_rng(5))

    assert poisoned.tolist() == [1.5] * 10


def test_gaussian_keeps_the_shape_of_a_layer():
    layer = np.zeros((3, 4, 5), dtype=np.float32)

    poisoned = gaussian(layer, mode="add", rng=np.random.default_rng(6))

    assert poisoned.shape == (3, 4, 5) and poisoned.dtype == np.float32


# --- sign flip and scaling ---------------------------------------------------------------


def test_sign_flip_negates_and_scales():
    update = np.array([1.0, -2.0, 0.5], dtype=np.float32)

    flipped = sign_flip(update)
    boosted = sign_flip(update, scale=4.0)

    assert flipped.tolist() == [-1.0, 2.0, -0.5]
    assert boosted.tolist() == [-4.0, 8.0, -2.0]
    assert boosted.dtype == np.float32


def test_scaling_multiplies_without_touching_the_input():
    update = np.array([1.0, -2.0, 0.5])

    boosted = scaling(update, factor=10.0)

    assert boosted.tolist() == [10.0, -20.0, 5.0]
    assert update.tolist() == [1.0, -2.0, 0.5]


def test_integer_updates_come_back_as_float64():
    assert sign_flip(np.array([1, 2])).dtype == np.float64


# --- registry and validation -------------------------------------------------------------


def test_records_poison_the_update_as_their_functions_do():
    update = np.array([1.0, 2.0])

    flipped = ATTACKS["sign_flip"](scale=2.0).poison_update(AttackInput(update, np.random.default_rng(0)))
    noisy = ATTACKS["gaussian"](mode="replace", sigma=0.0, mu=9.0).poison_update(
        AttackInput(update, np.random.default_rng(0)))
    boosted = ATTACKS["scaling"]().poison_update(AttackInput(update, np.random.default_rng(0)))

    assert flipped.tolist() == [-2.0, -4.0]
    assert noisy.tolist() == [9.0, 9.0]
    assert boosted.tolist() == [10.0, 20.0]  # the default factor
    assert list(ATTACKS) == ["gaussian", "sign_flip", "scaling", "alie", "ipm", "min_max", "min_sum", "fang_krum",
                             "fang_trim", "mimic", "label_flip", "backdoor"]


def test_records_say_what_they_act_on_and_know():
    replace, add = Gaussian(mode="replace"), Gaussian(mode="add")

    assert not replace.trains and add.trains  # replacing noise needs no honest update
    assert SignFlip().trains and Scaling().trains
    on_data = {"label_flip", "backdoor"}
    assert all(a().acts_on_update and not a().acts_on_data for n, a in ATTACKS.items() if n not in on_data)
    assert all(ATTACKS[n]().acts_on_data and ATTACKS[n]().targeted for n in on_data)
    assert {name: a.threat_model for name, a in ATTACKS.items()} == {
        "gaussian": "independent", "sign_flip": "independent", "scaling": "independent", "alie": "colluding",
        "ipm": "omniscient", "min_max": "omniscient", "min_sum": "omniscient", "fang_krum": "adaptive",
        "fang_trim": "adaptive", "mimic": "omniscient", "label_flip": "independent", "backdoor": "independent"}
    assert len({a.label for a in ATTACKS.values()}) == len(ATTACKS)
    assert all(a.reference for a in ATTACKS.values())


def test_the_base_attack_changes_nothing():
    class Nothing(Attack):
        name, label = "nothing", "nothing"

    x, y = np.ones((3, 2), dtype=np.float32), np.array([0, 1, 0])

    assert not Nothing().acts_on_data and not Nothing().acts_on_update
    assert Nothing().poison_data(x, y, Classes(("a", "b"), 0), np.random.default_rng(0)) == (x, y)
    assert not Nothing().targeted and Nothing().success_inputs(x, y, Classes(("a", "b"), 0)) is None
    assert Nothing().poison_update(AttackInput(np.ones(2), np.random.default_rng(0))).tolist() == [1.0, 1.0]


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("gaussian", {"mode": "add", "sigma": -1.0}, r"^sigma must be a finite number >= 0; got -1.0"),
        ("gaussian", {"mode": "swap"}, r"^mode must be one of \['replace', 'add'\]; got 'swap'"),
        ("gaussian", {"mode": "add", "mu": float("nan")}, r"^mu must be a finite number; got nan"),
        ("gaussian", {"mode": "add", "sigma": "1"}, r"^sigma must be a finite number >= 0"),
        ("sign_flip", {"scale": 0.0}, r"^scale must be a finite number > 0; got 0.0"),
        ("scaling", {"factor": True}, r"^factor must be a finite number; got True"),
    ],
)
def test_records_name_the_bad_parameter_first(name, params, message):
    with pytest.raises(AttackError, match=message):
        ATTACKS[name](**params)


def test_good_parameters_are_accepted():
    Gaussian(mode="replace", mu=0, sigma=3)
    SignFlip()
    Scaling(factor=-2.5)

    assert issubclass(AttackError, ValueError)  # the config layer catches ValueError


def test_attack_functions_check_their_arguments_too():
    update = np.ones(3)

    with pytest.raises(AttackError, match="sigma must be a finite number >= 0"):
        gaussian(update, mode="replace", sigma=-0.1, rng=np.random.default_rng(0))
    with pytest.raises(AttackError, match="rng must be a numpy.random.Generator"):
        gaussian(update, mode="replace", rng=0)
    with pytest.raises(AttackError, match="factor must be a finite number; got inf"):
        scaling(update, factor=np.inf)


# --- malicious nodes ---------------------------------------------------------------------


def test_draw_malicious_is_sorted_reproducible_and_fixed_for_the_run():
    first = draw_malicious(20, 5, seed=11)
    again = draw_malicious(20, 5, seed=11)
    other_seed = draw_malicious(20, 5, seed=12)

    assert first.dtype == np.int64 and first.tolist() == sorted(set(first.tolist()))
    assert len(first) == 5 and ((0 <= first) & (first < 20)).all()
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other_seed)


def test_draw_malicious_per_round_is_redrawn_but_deterministic():
    rounds = [draw_malicious(20, 5, seed=11, server_round=r) for r in range(1, 11)]
    again = [draw_malicious(20, 5, seed=11, server_round=r) for r in range(1, 11)]

    assert all(np.array_equal(a, b) for a, b in zip(rounds, again, strict=True))
    assert len({tuple(r) for r in rounds}) > 5  # C(20, 5) = 15504 possible sets
    assert all(len(r) == 5 for r in rounds)


def test_draw_malicious_sets_grow_by_adding_attackers():
    sets = [set(draw_malicious(10, f, seed=3).tolist()) for f in range(11)]

    assert all(sets[f] < sets[f + 1] for f in range(10))
    assert sets[0] == set() and sets[10] == set(range(10))


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ((5, 6), {"seed": 0}, r"num_malicious=6 malicious nodes from num_clients=5"),
        ((5, -1), {"seed": 0}, r"num_malicious must be an integer >= 0; got -1"),
        ((5, 1), {"seed": -3}, r"seed must be an integer >= 0; got -3"),
        ((5, 1), {"seed": 0, "server_round": 1.0}, r"server_round must be an integer >= 0"),
    ],
)
def test_draw_malicious_refuses_impossible_counts(args, kwargs, message):
    with pytest.raises(AttackError, match=message):
        draw_malicious(*args, **kwargs)


# --- ALIE and IPM ---------------------------------------------------------------------------


def test_alie_z_max_is_the_papers_quantile():
    from bflsim.attacks import alie_z

    # n = 20, f = 4: s = floor(11) - 4 = 7 supporters, Phi^-1(13 / 20) = 0.38532 (the 0.385)
    assert alie_z(20, 4) == pytest.approx(0.385320466, abs=1e-8)
    # n = 10, f = 2: s = 6 - 2 = 4, Phi^-1(6 / 10) = 0.253347
    assert alie_z(10, 2) == pytest.approx(0.253347103, abs=1e-8)
    with pytest.raises(AttackError, match="0 < f < n"):
        alie_z(5, 0)


def test_alie_sends_the_coalitions_mean_minus_z_standard_deviations():
    coalition = np.array([[1.0, 10.0, -2.0], [3.0, 10.0, 0.0], [5.0, 13.0, 2.0]], dtype=np.float32)
    attack = ATTACKS["alie"](z=1.5)

    sent = attack.poison_update(AttackInput(coalition[0], np.random.default_rng(0), coalition=coalition, num_nodes=9))

    # by hand: means 3, 11, 0; sample standard deviations 2, sqrt(3), 2
    np.testing.assert_allclose(sent, [3 - 1.5 * 2, 11 - 1.5 * np.sqrt(3), 0 - 1.5 * 2], rtol=1e-6)
    assert sent.dtype == np.float32
    default = ATTACKS["alie"]().poison_update(AttackInput(coalition[0], np.random.default_rng(0), coalition=coalition,
                                                          num_nodes=20))
    z = NormalDist().inv_cdf((20 - (11 - 3)) / 20)  # unset z: f = 3 of n = 20, s = 8 supporters, Phi^-1(0.6)
    np.testing.assert_allclose(default, [3 - z * 2, 11 - z * np.sqrt(3), 0 - z * 2], rtol=1e-6)


def test_ipm_sends_minus_epsilon_times_the_benign_mean():
    everyone = np.array([[1.0, 2.0], [3.0, 4.0], [100.0, -100.0], [5.0, 0.0]])  # row 2 is the attacker's own
    coalition = everyone[[2]]

    sent = ATTACKS["ipm"](epsilon=0.5).poison_update(
        AttackInput(everyone[2], np.random.default_rng(0), coalition=coalition, honest=everyone, num_nodes=4))

    np.testing.assert_allclose(sent, [-0.5 * 3.0, -0.5 * 2.0])  # benign mean (3, 2)
    with pytest.raises(AttackError, match="at least one benign node"):
        ATTACKS["ipm"]().poison_update(AttackInput(everyone[2], np.random.default_rng(0), coalition=everyone,
                                                   honest=everyone, num_nodes=4))


def test_alie_and_ipm_say_what_they_need_and_refuse_bad_parameters():
    assert (ATTACKS["alie"].threat_model, ATTACKS["ipm"].threat_model) == ("colluding", "omniscient")
    with pytest.raises(AttackError, match="threat model 'colluding'"):
        ATTACKS["alie"]().poison_update(AttackInput(np.ones(3), np.random.default_rng(0)))
    with pytest.raises(AttackError, match="threat model 'omniscient'"):
        ATTACKS["ipm"]().poison_update(AttackInput(np.ones(3), np.random.default_rng(0), coalition=np.ones((1, 3))))
    with pytest.raises(AttackError, match="epsilon must be a finite number > 0; got -1"):
        ATTACKS["ipm"](epsilon=-1)
    with pytest.raises(AttackError, match="z must be a finite number"):
        ATTACKS["alie"](z=float("nan"))


def test_colluding_attacks_run_end_to_end_in_the_plain_loop():
    """Every attacker of a round sends the same ALIE vector; IPM against FedAvg hurts."""
    from bflsim.bench.plain_loop import run_plain
    from bflsim.config import parse_experiment
    from bflsim.edge_node import load_data, train_locally
    from bflsim.models import initial_weights

    base = {
        "experiment": {"name": "zoo", "kind": "federated"},
        "data": {"dataset": "synthetic", "synthetic": {"num_samples": 1200}},
        "models": {"names": ["dnn"], "dnn": {"hidden_units": [16], "dropout": 0.0}},
        "train": {"batch_size": 32, "learning_rate": 0.01},
        "federation": {"num_nodes": 8, "rounds": 3},
        "aggregator": {"name": "fedavg"},
        "ledger": {"backend": "none"},
    }
    alie_config = parse_experiment({**base, "attack": {"name": "alie", "num_malicious": 2, "threat_model": "colluding"}})
    bad, cohort = alie_config.malicious_nodes(1).tolist(), list(range(8))
    data = load_data(alie_config.data)
    weights = initial_weights(alie_config.models, alie_config.train, data.num_features, data.num_classes)
    sent = [train_locally(alie_config, node, 1, weights, cohort=cohort).weights for node in bad]
    assert all(np.array_equal(a, b) for a, b in zip(sent[0], sent[1], strict=True))

    clean = run_plain(parse_experiment({**base, "attack": {"name": "none"}}))
    hit = run_plain(parse_experiment({**base, "attack": {"name": "ipm", "num_malicious": 3, "threat_model": "omniscient",
                                                         "params": {"epsilon": 5.0}}}))
    assert hit["final_accuracy"] < clean["final_accuracy"] - 0.1
