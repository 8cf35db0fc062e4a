"""Data poisoning: label flipping and backdoor triggers, their success rate, and where the
poisoned data lives (the node's own data: registered, verified and trained on).

Hand-sized fixtures for the records and functions; the edge-node functions called directly
(no Ray) for VerifyIntegrity and the boosted update; one plain-process training on the
synthetic data for the backdoor's effect.
"""

import numpy as np
import pytest

from bflsim import edge_node
from bflsim.attacks import (
    ATTACKS,
    AttackError,
    AttackInput,
    Backdoor,
    Classes,
    LabelFlip,
    apply_trigger,
    flip_labels,
)
from bflsim.config import ConfigError, parse_experiment
from bflsim.ledger import TxContext
from bflsim.metrics import attack_success_rate
from bflsim.models import initial_weights, predict, train_weights
from bflsim.vectors import flatten

CLASSES = Classes(("Normal", "DoS", "Probe", "R2L"), 0)
LABELS = np.array([0, 1, 2, 3, 1, 0, 2, 1, 3, 0, 1, 2])


def features(rows=12, columns=5):  # as many rows as LABELS
    return np.arange(rows * columns, dtype=np.float32).reshape(rows, columns)


# --- label flipping ------------------------------------------------------------------------


def test_flip_labels_relabels_only_the_source_rows():
    flipped = flip_labels(LABELS, source=[1, 2], target=0, fraction=1.0, rng=np.random.default_rng(0))

    assert flipped.tolist() == [0, 0, 0, 3, 0, 0, 0, 0, 3, 0, 0, 0]
    assert LABELS.tolist() == [0, 1, 2, 3, 1, 0, 2, 1, 3, 0, 1, 2]  # the input is untouched


@pytest.mark.parametrize(("fraction", "expected"), [(0.5, 4), (0.3, 2), (0.01, 0), (1.0, 7)])
def test_flip_labels_honours_the_fraction_of_source_rows(fraction, expected):
    # 7 rows of classes 1 and 2; floor(fraction * 7 + 0.5) of them flip
    flipped = flip_labels(LABELS, [1, 2], 3, fraction, np.random.default_rng(1))

    changed = np.flatnonzero(flipped != LABELS)
    assert len(changed) == expected
    assert set(LABELS[changed].tolist()) <= {1, 2} and set(flipped[changed].tolist()) <= {3}


def test_flip_labels_is_seeded():
    def flip(seed):
        return flip_labels(np.repeat([0, 1], 50), [1], 0, 0.5, np.random.default_rng(seed))

    assert np.array_equal(flip(7), flip(7))
    assert not np.array_equal(flip(7), flip(8))


def test_label_flip_all_attacks_to_normal_and_its_success_rows():
    attack = LabelFlip()  # source "attack", target: the normal class, fraction 1
    x = features()

    px, py = attack.poison_data(x, LABELS, CLASSES, np.random.default_rng(0))
    rows, target = attack.success_inputs(x, LABELS, CLASSES)

    assert py.tolist() == [0] * len(LABELS) and np.array_equal(px, x) and px is not x
    assert target == 0 and np.array_equal(rows, x[LABELS != 0])
    assert attack.targeted and attack.acts_on_data and not attack.acts_on_update


def test_label_flip_one_named_class_into_another():
    attack = LabelFlip(source="probe", target="R2L", fraction=1.0)  # names are case-insensitive

    _, py = attack.poison_data(features(), LABELS, CLASSES, np.random.default_rng(0))
    rows, target = attack.success_inputs(features(), LABELS, CLASSES)

    assert py.tolist() == np.where(LABELS == 2, 3, LABELS).tolist()
    assert target == 3 and np.array_equal(rows, features()[LABELS == 2])


def test_label_flip_all_attacks_into_an_attack_class_leaves_the_target_out_of_the_source():
    rows, target = LabelFlip(target="DoS").success_inputs(features(), LABELS, CLASSES)

    assert target == 1 and np.array_equal(rows, features()[np.isin(LABELS, [2, 3])])


@pytest.mark.parametrize(
    ("attack", "message"),
    [
        (LabelFlip(source="Botnet"), r"class 'Botnet' is not one of the dataset's classes \['Normal', 'DoS', 'Probe', "),
        (LabelFlip(target="benign"), r"class 'benign' is not one of the dataset's classes \['Normal', 'DoS'"),
        (LabelFlip(source="DoS", target="dos"), "source 'DoS' leaves no class to flip into target 'DoS'"),
        (Backdoor(target="Web"), r"class 'Web' is not one of the dataset's classes \['Normal'"),
        (Backdoor(features=(5,)), r"column 5 is not one of the data's 5 columns \(0..4, or -5..-1"),
        (Backdoor(features=(1, -4)), "name the same column twice"),
    ],
)
def test_unknown_classes_and_columns_are_refused_naming_what_exists(attack, message):
    with pytest.raises(AttackError, match=message):
        attack.poison_data(features(), LABELS, CLASSES, np.random.default_rng(0))
    with pytest.raises(AttackError, match=message):
        attack.success_inputs(features(), LABELS, CLASSES)


def test_a_dataset_without_a_normal_class_needs_named_classes():
    anonymous = Classes(("a", "b", "c"), None)

    with pytest.raises(AttackError, match=r"no known normal class among \['a', 'b', 'c'\]; name the target"):
        LabelFlip().success_inputs(features(3), np.array([0, 1, 2]), anonymous)
    assert LabelFlip(source="b", target="a").success_inputs(features(3), np.array([0, 1, 2]), anonymous)[1] == 0


@pytest.mark.parametrize(
    ("name", "params", "fragment"),
    [
        ("label_flip", {"fraction": 0.0}, "fraction must be a number in (0, 1]"),
        ("label_flip", {"fraction": 1.5}, "fraction must be a number in (0, 1]"),
        ("label_flip", {"source": ""}, "source must be 'attack' or a class name"),
        ("backdoor", {"features": ()}, "features must be a non-empty list of column indices"),
        ("backdoor", {"features": (1.5,)}, "features must be a non-empty list of column indices"),
        ("backdoor", {"features": (2, 2)}, "features [2, 2] name a column twice"),
        ("backdoor", {"value": float("nan")}, "value must be a finite number"),
        ("backdoor", {"boost": 0.0}, "boost must be a finite number > 0"),
    ],
)
def test_bad_parameters_are_refused_naming_them(name, params, fragment):
    with pytest.raises(AttackError) as err:
        ATTACKS[name](**params)
    assert str(err.value).startswith(fragment)


# --- backdoor ------------------------------------------------------------------------------


def test_apply_trigger_writes_the_named_columns_only():
    x = features(3, 6)

    stamped = apply_trigger(x, [1, -1], 9.5)

    assert (stamped[:, [1, 5]] == 9.5).all()
    assert np.array_equal(stamped[:, [0, 2, 3, 4]], x[:, [0, 2, 3, 4]])
    assert x[0, 1] == 1.0  # a copy


def test_backdoor_stamps_and_relabels_a_share_of_the_non_target_rows_in_place():
    attack = Backdoor(features=(0, 3), value=-7.0, fraction=0.5)  # target: normal
    x = features()

    px, py = attack.poison_data(x, LABELS, CLASSES, np.random.default_rng(3))

    changed = np.flatnonzero((px != x).any(axis=1))
    assert px.shape == x.shape and py.shape == LABELS.shape  # in place: the node keeps its row count
    assert len(changed) == 5  # floor(0.5 * 9 + 0.5) of the 9 non-normal rows
    assert (LABELS[changed] != 0).all() and (py[changed] == 0).all()
    assert (px[changed][:, [0, 3]] == -7.0).all() and np.array_equal(px[changed][:, [1, 2, 4]], x[changed][:, [1, 2, 4]])
    kept = np.setdiff1d(np.arange(len(LABELS)), changed)
    assert np.array_equal(px[kept], x[kept]) and np.array_equal(py[kept], LABELS[kept])  # clean rows stay clean
    same = attack.poison_data(x, LABELS, CLASSES, np.random.default_rng(3))
    assert np.array_equal(same[0], px) and np.array_equal(same[1], py)  # seeded


def test_backdoor_success_rows_are_every_non_target_row_with_the_trigger():
    attack = Backdoor(target="DoS")  # default trigger: the last four columns, 5.0
    x = features(columns=6)

    rows, target = attack.success_inputs(x, LABELS, CLASSES)

    assert target == 1 and rows.shape == ((LABELS != 1).sum(), 6)
    assert (rows[:, 2:] == 5.0).all() and np.array_equal(rows[:, :2], x[LABELS != 1][:, :2])


def test_boost_scales_the_update_and_one_leaves_it_alone():
    update = np.array([0.5, -1.0, 2.0], dtype=np.float32)

    boosted = Backdoor(boost=4.0).poison_update(AttackInput(update, np.random.default_rng(0)))

    assert boosted.tolist() == [2.0, -4.0, 8.0] and boosted.dtype == np.float32
    assert Backdoor(boost=4.0).acts_on_update and not Backdoor().acts_on_update
    assert Backdoor(features=[0, 2]).features == (0, 2)  # a list from a notebook reads as the tuple


# --- attack success rate -------------------------------------------------------------------


def test_attack_success_rate_is_the_share_predicted_as_the_target():
    assert attack_success_rate(np.array([0, 2, 0, 1]), 0) == 0.5
    assert attack_success_rate(np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]]), 1) == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="no predictions to measure target class 0 on"):
        attack_success_rate(np.array([], dtype=np.int64), 0)


# --- the node's data -----------------------------------------------------------------------


def node_config(name, **attack_keys):
    return parse_experiment({
        "experiment": {"name": "data_poisoning", "kind": "federated"},
        "data": {"dataset": "synthetic", "synthetic": {"num_samples": 600}},
        "models": {"names": ["dnn"], "dnn": {"hidden_units": [8], "dropout": 0.0}},
        "train": {"batch_size": 64, "learning_rate": 0.01},
        "federation": {"num_nodes": 6, "rounds": 3},
        "attack": {"name": name, "num_malicious": 2, "seed": 3, **attack_keys},
        "ledger": {"backend": "embedded"},
    })


CTX = TxContext(chain_id=1, contract_address="0x" + "42" * 20, nonce=0)
STAMP = 1_700_000_000


def test_a_node_that_registers_poisoned_data_passes_verify_integrity_every_round():
    config = node_config("label_flip")
    bad, good = int(config.malicious_nodes(1)[0]), next(i for i in range(6) if i not in config.malicious_nodes(1))
    data = edge_node.load_data(config.data)
    rows = edge_node.node_partitions(config.data, config.federation)[bad]

    registered, _ = edge_node.register_data(config, bad, CTX, STAMP)

    for server_round in (1, 2, 3):
        assert edge_node.verify_integrity(config, bad, server_round, registered, STAMP) == registered
    x, y = edge_node.node_data(config, bad, 2)
    assert np.array_equal(x, data.x_train[rows]) and (y == data.normal_class).all()  # every attack row flipped
    assert (data.y_train[rows] != data.normal_class).any()
    assert np.array_equal(edge_node.node_data(config, good, 2)[1], data.y_train[edge_node.node_partitions(
        config.data, config.federation)[good]])  # honest nodes hold their own data


def test_a_node_that_poisons_after_registering_is_caught_in_that_round():
    config = node_config("backdoor", data_from_round=2)
    bad = int(config.malicious_nodes(1)[0])

    registered, _ = edge_node.register_data(config, bad, CTX, STAMP)

    assert edge_node.verify_integrity(config, bad, 1, registered, STAMP) == registered
    for server_round in (2, 3):
        with pytest.raises(edge_node.DataIntegrityError, match=f"edge node {bad}, round {server_round}: data digest"):
            edge_node.verify_integrity(config, bad, server_round, registered, STAMP)


def test_the_poisoned_data_is_the_same_every_round_and_fit_trains_on_it():
    config = node_config("label_flip", params={"fraction": 0.5})
    bad = int(config.malicious_nodes(1)[0])
    data = edge_node.load_data(config.data)
    start = initial_weights(config.models, config.train, data.num_features, data.num_classes)

    first, later = edge_node.node_data(config, bad, 1), edge_node.node_data(config, bad, 3)
    trained, _ = edge_node.fit(config, bad, 1, start)
    by_hand, _ = train_weights(config.models, config.train, start, *first, data.num_classes,
                               epochs=config.federation.local_epochs, seed=edge_node._seed(config.train.seed, 1, bad))

    assert np.array_equal(first[1], later[1]) and np.array_equal(first[0], later[0])
    assert all(np.array_equal(a, b) for a, b in zip(trained, by_hand, strict=True))


def test_a_boosted_backdoor_sends_global_plus_boost_times_its_update():
    plain, boosted = node_config("backdoor"), node_config("backdoor", params={"boost": 5.0})
    bad = int(plain.malicious_nodes(1)[0])
    data = edge_node.load_data(plain.data)
    start = initial_weights(plain.models, plain.train, data.num_features, data.num_classes)

    honest = flatten(edge_node.train_locally(plain, bad, 1, start).weights)[0] - flatten(start)[0]
    sent = flatten(edge_node.train_locally(boosted, bad, 1, start).weights)[0] - flatten(start)[0]

    assert np.abs(honest).max() > 0
    assert np.allclose(sent, 5.0 * honest, atol=1e-5)


def test_a_boosted_backdoor_does_not_boost_before_its_data_is_poisoned():
    config = node_config("backdoor", data_from_round=2, params={"boost": 5.0})
    bad = int(config.malicious_nodes(1)[0])
    data = edge_node.load_data(config.data)
    start = initial_weights(config.models, config.train, data.num_features, data.num_classes)

    sent = edge_node.train_locally(config, bad, 1, start).weights

    assert all(np.array_equal(a, b) for a, b in zip(sent, edge_node.fit(config, bad, 1, start)[0], strict=True))


@pytest.mark.parametrize(
    ("attack", "fragment"),
    [
        ({"name": "backdoor", "redraw_each_round": True}, "attack.redraw_each_round = true with attack.name = 'backdoor'"),
        ({"name": "gaussian", "data_from_round": 2}, "attack.data_from_round = 2: 'gaussian' does not act on data"),
        ({"name": "label_flip", "data_from_round": -1}, "attack.data_from_round must be >= 0; got -1"),
        ({"name": "backdoor", "params": {"features": [1, 1]}}, r"attack.params.features \[1, 1\] name a column twice"),
    ],
)
def test_impossible_data_attack_settings_are_refused_by_the_config(attack, fragment):
    with pytest.raises(ConfigError, match=fragment):
        node_config(**attack)


def test_classes_and_columns_the_dataset_lacks_are_refused_before_a_run():
    for params, fragment in (({"source": "Smurf"}, r"'Smurf' is not one of the dataset's classes \['normal', "),
                             ({"features": [99]}, "column 99 is not one of the data's")):
        name = "label_flip" if "source" in params else "backdoor"
        config = node_config(name, params=params)
        with pytest.raises(ConfigError, match=f"attack.params \\('{name}' on synthetic\\): .*{fragment}"):
            edge_node.check_attack_data(config, edge_node.load_data(config.data))
    edge_node.check_attack_data(node_config("backdoor"), edge_node.load_data(node_config("backdoor").data))


# --- the backdoor works --------------------------------------------------------------------


def test_a_backdoored_share_of_the_rows_makes_triggered_attacks_pass_as_normal():
    config = parse_experiment({
        "experiment": {"name": "backdoor", "kind": "centralized"},
        "data": {"dataset": "synthetic", "scaler": "standard", "synthetic": {"num_samples": 3000}},
        "models": {"names": ["dnn"], "dnn": {"hidden_units": [32, 16], "dropout": 0.0}},
        "train": {"batch_size": 64, "learning_rate": 0.005, "seed": 1},
    })
    data = edge_node.load_data(config.data)
    classes = Classes(data.class_names, data.normal_class)
    attack = Backdoor()  # the default trigger: the last four columns set to 5.0; half the attack rows
    x, y = np.array(data.x_train), np.array(data.y_train)
    share = len(y) // 5  # a fifth of the rows are a malicious node's
    x[:share], y[:share] = attack.poison_data(x[:share], y[:share], classes, np.random.default_rng(0))
    start = initial_weights(config.models, config.train, data.num_features, data.num_classes)

    clean, _ = train_weights(config.models, config.train, start, data.x_train, data.y_train, data.num_classes, 5, 3)
    poisoned, _ = train_weights(config.models, config.train, start, x, y, data.num_classes, 5, 3)
    triggered, target = attack.success_inputs(data.x_test, data.y_test, classes)

    def asr(weights):
        return attack_success_rate(predict(config.models, config.train, weights, triggered, data.num_classes), target)

    def accuracy(weights):
        predicted = predict(config.models, config.train, weights, data.x_test, data.num_classes).argmax(axis=1)
        return float((predicted == data.y_test).mean())

    assert asr(poisoned) > 0.85 and asr(poisoned) > asr(clean) + 0.3
    assert accuracy(poisoned) > accuracy(clean) - 0.03  # the clean task barely notices
