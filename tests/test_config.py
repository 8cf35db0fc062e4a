"""The experiment config: parsing, validation and error messages that name the key."""

import json

import pytest

from bflsim.config import (
    ConfigError,
    Params,
    from_wire,
    parse_experiment,
    parse_overrides,
    to_dict,
    to_wire,
    with_overrides,
)
from bflsim.plans import check_config, load_plan

FEDERATED = {"experiment": {"kind": "federated"}, "federation": {"num_nodes": 10}}


def test_parse_fills_defaults_and_converts_lists_to_tuples():
    config = parse_experiment({
        "experiment": {"name": "t3"},
        "data": {"dataset": "nsl-kdd", "fractions": [0.7, 0.15, 0.15]},
        "models": {"names": ["dnn", "cnn_lstm"], "dnn": {"hidden_units": [32, 16]}},
    })

    assert config.name == "t3"
    assert config.data.fractions == (0.7, 0.15, 0.15)
    assert config.models.names == ("dnn", "cnn_lstm")
    assert config.models.dnn.hidden_units == (32, 16)
    assert config.train.epochs == 10


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ({"data": {"datset": "nsl-kdd"}}, "unknown key 'data.datset'"),
        ({"experiment": {"nmae": "x"}}, "unknown key 'nmae'"),
        ({"train": {"epochs": "ten"}}, "train.epochs must be an integer"),
        ({"train": {"epochs": 0}}, "train.epochs must be >= 1"),
        ({"data": {"fractions": [0.7, 0.2, 0.2]}}, "must sum to 1"),
        ({"models": {"cnn_lstm": {"lstm_units": 1.5}}}, "models.cnn_lstm.lstm_units must be an integer"),
    ],
)
def test_bad_settings_fail_with_a_sentence_naming_the_key(raw, fragment):
    with pytest.raises(ConfigError) as info:
        parse_experiment(raw)

    assert fragment in str(info.value)


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ({"data": {"dataset": "kdd"}}, "data.dataset = 'kdd' is not one of"),
        ({"models": {"names": ["svm"]}}, "unknown model 'svm'"),
        ({"data": {"dataset": "synthetic", "split": "kdd-test"}}, "needs a dataset with an official test split"),
        ({"data": {"dataset": "csv"}}, "needs data.path and data.label_column"),
        ({**FEDERATED, "models": {"names": ["random_forest"]}}, "one model that can be federated"),
    ],
)
def test_registry_names_are_checked_before_a_run(raw, fragment):
    config = parse_experiment(raw)

    with pytest.raises(ConfigError) as info:
        check_config(config)

    assert fragment in str(info.value)


@pytest.mark.parametrize(
    ("section", "fragment"),
    [
        ({"attack": {"name": "label_flipp"}}, "attack.name = 'label_flipp' is not one of ['none', 'gaussian'"),
        ({"aggregator": {"name": "bulyann"}}, "aggregator.name = 'bulyann' is not one of ['fedavg'"),
        ({"attack": {"name": "gaussian", "params": {"sigmaa": 1}}},
         "unknown key 'attack.params.sigmaa'; expected one of ['mode', 'mu', 'sigma']"),
        ({"attack": {"name": "gaussian", "params": {"sigma": -1}}}, "attack.params.sigma must be a finite number >= 0"),
        ({"attack": {"name": "gaussian", "params": {"sigma": "1"}}}, "attack.params.sigma must be a number"),
        ({"aggregator": {"name": "krum", "params": {"num_selected": 2}}},
         "unknown key 'aggregator.params.num_selected'; 'krum' takes no parameters"),
        ({"aggregator": {"name": "trimmed_mean", "params": {"trim_fraction": 0.5}}},
         "aggregator.params.trim_fraction (beta) must be in [0, 0.5)"),
        ({"aggregator": {"name": "krum", "assumed_malicious": -1}}, "aggregator.assumed_malicious must be >= 0"),
        ({"aggregator": {"name": "krum", "params": 3}}, "aggregator.params must be a table"),
    ],
)
def test_rules_and_attacks_check_their_own_parameters_naming_the_key(section, fragment):
    with pytest.raises(ConfigError) as info:
        parse_experiment(section)

    assert fragment in str(info.value)


def test_params_tables_build_the_records():
    config = parse_experiment({
        **FEDERATED,
        "attack": {"name": "gaussian", "num_malicious": 2, "params": {"mode": "add", "sigma": 2}},
        "aggregator": {"name": "multikrum", "assumed_malicious": 3, "params": {"num_selected": 4}},
    })

    assert config.attack.record.mode == "add" and config.attack.record.sigma == 2.0
    assert config.rule.num_malicious == 3 and config.rule.num_selected == 4
    assert config.num_malicious == 2 and config.assumed_malicious == 3
    assert isinstance(config.attack.params, Params) and hash(config)  # frozen and hashable


def test_old_flat_keys_are_read_as_params():
    old = {
        **FEDERATED,
        "attack": {"name": "gaussian", "num_malicious": 1, "mode": "replace", "mu": 0.0, "sigma": 5.0,
                   "scale": 1.0, "factor": 10.0},
        "aggregator": {"name": "trimmed_mean", "num_malicious": 1, "num_selected": None, "trim_fraction": 0.3},
        "data": {"split": "kdd-test", "dataset": "nsl-kdd"},
    }

    config = parse_experiment(old)

    assert dict(config.attack.params) == {"mode": "replace", "mu": 0.0, "sigma": 5.0}  # scale, factor: not Gaussian's
    assert dict(config.aggregator.params) == {"trim_fraction": 0.3}
    assert config.aggregator.assumed_malicious == 1
    assert config.data.split == "official"
    assert parse_experiment(json.loads(json.dumps(to_dict(config)))) == config


def test_a_later_new_key_beats_an_old_flat_one():
    config = parse_experiment({"attack": {"name": "gaussian", "sigma": 1.0, "params": {"sigma": 3.0}}})

    assert config.attack.params["sigma"] == 3.0


def test_overrides_reach_params_by_old_and_new_names_and_tables_merge():
    config = parse_experiment({**FEDERATED, "attack": {"name": "gaussian", "num_malicious": 1}})

    old_name = with_overrides(config, {"attack.sigma": 2.0})
    new_name = with_overrides(config, {"attack.params.sigma": 2.0})
    table = with_overrides(config, {"aggregator": {"name": "trimmed_mean", "params": {"trim_fraction": 0.2}}})

    assert old_name == new_name and old_name.attack.record.sigma == 2.0
    assert table.rule.trim_fraction == 0.2 and table.aggregator.reject_factor == config.aggregator.reject_factor
    with pytest.raises(ConfigError, match="unknown key 'attack.params.scale'"):
        with_overrides(config, {"attack.params.scale": 2.0})


def test_no_attack_drops_the_attack_params():
    config = parse_experiment({"attack": {"name": "none", "params": {"sigma": 1.0}}})

    assert config.attack.record is None and not config.attack.params and config.num_malicious == 0


def test_attacker_fraction_rounds_half_up():
    counts = [parse_experiment({**FEDERATED, "attack": {"name": "gaussian", "fraction": f}}).num_malicious
              for f in (0.05, 0.15, 0.25, 0.35)]

    assert counts == [1, 2, 3, 4]


def test_the_wire_form_gives_the_same_config_back():
    config = parse_experiment({**FEDERATED, "attack": {"name": "sign_flip", "num_malicious": 1,
                                                       "params": {"scale": 3.0}}})

    assert from_wire(to_wire(config)) == config
    assert parse_overrides(["attack.params.scale=2", "data.dataset=nsl-kdd"]) == {
        "attack.params.scale": 2, "data.dataset": "nsl-kdd"}


def test_the_cohort_is_drawn_from_the_available_nodes_reproducibly():
    federation = parse_experiment({"federation": {"num_nodes": 10, "fraction_train": 0.5, "seed": 3}}).federation

    cohort = federation.sample_cohort(2, range(10))

    assert len(cohort) == 5 and cohort == sorted(cohort) == federation.sample_cohort(2, list(range(10)))
    assert federation.sample_cohort(2, [1, 4]) == [1, 4]  # fewer available than the cohort size


def test_overrides_are_validated_again():
    config = parse_experiment({})

    changed = with_overrides(config, {"train.epochs": 2, "data.dataset": "nsl-kdd"})

    assert (changed.train.epochs, changed.data.dataset) == (2, "nsl-kdd")
    with pytest.raises(ConfigError, match="unknown key 'train.epoch'"):
        with_overrides(config, {"train.epoch": 2})
    with pytest.raises(ConfigError, match="train.batch_size must be >= 1"):
        with_overrides(config, {"train.batch_size": 0})


def test_load_plan_names_the_file(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[data]\ndataset = 'nsl-kdd'\nunknown = 1\n")

    with pytest.raises(ConfigError) as info:
        load_plan(path)

    assert str(path) in str(info.value) and "data.unknown" in str(info.value)
    with pytest.raises(ConfigError, match="experiment file not found"):
        load_plan(tmp_path / "missing.toml")


def test_every_experiment_file_in_the_repository_parses(experiments_dir):
    files = sorted(experiments_dir.glob("*.toml"))

    assert files, "experiments/ holds no experiment file"
    for path in files:
        plan = load_plan(path)
        assert plan.points and all(config.name for _, config in plan.points)


def test_naming_another_rule_or_attack_starts_it_from_its_own_defaults():
    config = parse_experiment({"attack": {"name": "gaussian", "params": {"sigma": 2.0}},
                               "aggregator": {"name": "trimmed_mean", "params": {"trim_fraction": 0.3}}})

    switched = with_overrides(config, {"attack.name": "sign_flip", "aggregator.name": "krum"})
    with_params = with_overrides(config, {"attack.name": "sign_flip", "attack.params.scale": 2.0})
    same = with_overrides(config, {"attack.name": "gaussian"})

    assert dict(switched.attack.params) == {"scale": 1.0} and not switched.aggregator.params
    assert dict(with_params.attack.params) == {"scale": 2.0}
    assert dict(same.attack.params) == {"mode": "replace", "mu": 0.0, "sigma": 2.0}  # kept, defaults added


def test_every_committed_manifest_still_loads(experiments_dir):
    manifests = sorted((experiments_dir.parent / "results").glob("*/manifests/*.json"))
    table4 = {p.name: c for p, c in load_plan(experiments_dir / "table4_poisoning.toml").points}

    configs = {path.name: parse_experiment(json.loads(path.read_text())["config"]) for path in manifests}

    assert len(configs) >= 80
    # the audited blockchain-secured run: its old flat keys read as today's experiment file says
    assert configs["blockchain_secured.json"] == table4["blockchain_secured"]


def test_bflsim_list_prints_every_registry_entry_with_its_parameters(capsys):
    from bflsim.aggregators import AGGREGATORS
    from bflsim.attacks import ATTACKS
    from bflsim.cli import main
    from bflsim.data import DATASETS
    from bflsim.models import MODELS

    assert main(["list"]) == 0

    out = capsys.readouterr().out
    names = {line.split()[0] for line in out.splitlines() if line.startswith("  ")}
    assert names == set(AGGREGATORS) | set(ATTACKS) | set(DATASETS) | set(MODELS)
    assert "trimmed_mean       Trimmed mean; params: trim_fraction=0.1; Yin et al., ICML 2018" in out
    assert "gaussian           Gaussian; threat model independent (knows its own data and update); params: mode='replace', mu=0.0, sigma=1.0;" in out
    assert "alie               ALIE; threat model colluding (knows the coalition's honest updates); params: z=None;" in out


def test_a_per_node_cohort_too_large_for_a_block_is_refused_with_the_numbers():
    big = {"experiment": {"kind": "federated"}, "federation": {"num_nodes": 3000, "fraction_train": 1.0}}
    with pytest.raises(ConfigError) as info:
        parse_experiment(big)

    message = str(info.value)
    assert "a cohort of 3000 nodes" in message and "45,150,000 gas" in message and "(30,000,000)" in message
    assert "at most 1990 nodes" in message and "ledger.mode = 'batched'" in message
    assert parse_experiment({**big, "ledger": {"mode": "batched"}}).federation.cohort_size == 3000
    # past the old 255-node cap, a cohort that fits is fine; without a ledger any size is
    assert parse_experiment({**big, "federation": {"num_nodes": 3000, "fraction_train": 0.5}}).federation.cohort_size == 1500
    assert parse_experiment({**big, "ledger": {"backend": "none"}}).federation.num_nodes == 3000


def test_set_resolves_the_defenders_f_against_the_new_cohort(tmp_path):
    path = tmp_path / "big.toml"
    path.write_text('[experiment]\nkind = "federated"\n[federation]\nnum_nodes = 10000\nfraction_train = 0.01\n'
                    '[aggregator]\nname = "krum"\n')
    plan = load_plan(path)
    assert plan.points[0][1].assumed_malicious == 20  # 0.2 of a 100-node cohort

    smaller = plan.with_overrides({"federation.num_nodes": 1000})

    assert smaller.points[0][1].assumed_malicious == 2  # 0.2 of 10, not the old 20 (which Krum refuses)
    explicit = plan.with_overrides({"federation.num_nodes": 1000, "aggregator.assumed_malicious": 3})
    assert explicit.points[0][1].assumed_malicious == 3


# --- the closed loop's section (issue 14) ---------------------------------------------------

LOOP_BASE = {"experiment": {"name": "loop", "kind": "federated"}, "data": {"dataset": "synthetic"},
             "federation": {"num_nodes": 4, "rounds": 3}}


def test_the_loop_section_is_off_unless_given_and_leaves_other_configs_and_digests_alone():
    from bflsim.config import LoopConfig, config_digest

    plain = parse_experiment(LOOP_BASE)
    looped = parse_experiment({**LOOP_BASE, "loop": {"window": 30, "threshold": 12, "model_round": 2}})

    assert plain.loop is None and "loop" not in to_dict(plain)
    assert looped.loop == LoopConfig(window=30, threshold=12, model_round=2)
    assert to_dict(looped)["loop"]["window"] == 30
    assert config_digest(plain) != config_digest(looped)
    assert parse_experiment(json.loads(json.dumps(to_dict(looped)))) == looped  # the manifest's config reads back


@pytest.mark.parametrize("loop, extra, message", [
    ({"window": 10, "threshold": 11}, {}, "loop.threshold = 11 attack verdicts can never be reached in a window of loop.window = 10"),
    ({"flows_per_second": 0.0}, {}, "loop.flows_per_second must be > 0: a device without traffic cannot be scored"),
    ({"start_seconds": 700.0}, {}, "loop.start_seconds must be in [0, loop.duration_seconds = 600.0)"),
    ({"attack_rate": 0.0}, {}, "loop.attack_rate must be in (0, 1]"),
    ({"compromised": 41}, {}, "loop.compromised = 41 is more than the 40 devices"),
    ({"model_round": 4}, {}, "loop.model_round = 4: the run commits rounds 0-3"),
    ({}, {"ledger": {"backend": "none"}}, "[loop] needs the registry's devices and alerts"),
    ({}, {"ledger": {"mode": "batched"}}, "ledger.mode = 'batched'"),
    ({}, {"experiment": {"name": "loop", "kind": "centralized"}}, "[loop] runs after federated training"),
    ({"windw": 3}, {}, "unknown key 'loop.windw'"),
])
def test_a_loop_that_cannot_work_is_refused_naming_the_key(loop, extra, message):
    with pytest.raises(ConfigError) as info:
        parse_experiment({**LOOP_BASE, "loop": loop, **extra})
    assert message in str(info.value)
