"""Threat models and the defender's assumptions (issue 11): what the experiment grants the
attackers is its setting, checked before anything runs; the f a rule assumes is the
defender's own setting and never reads the number of attackers drawn."""

import pytest

from bflsim.aggregators import AGGREGATORS
from bflsim.attacks import ATTACKS, THREAT_MODELS, grants
from bflsim.config import ConfigError, parse_experiment, parse_recorded, to_dict


def experiment(attack=None, aggregator=None, num_nodes=20, fraction_train=1.0):
    return {
        "experiment": {"name": "threats", "kind": "federated"},
        "data": {"dataset": "synthetic", "synthetic": {"num_samples": 2000}},
        "models": {"names": ["dnn"], "dnn": {"hidden_units": [8]}},
        "federation": {"num_nodes": num_nodes, "rounds": 1, "fraction_train": fraction_train},
        "attack": attack or {"name": "none"},
        "aggregator": aggregator or {"name": "krum"},
        "ledger": {"backend": "none"},
    }


def test_threat_models_are_ordered_and_each_grants_what_the_weaker_grant():
    assert THREAT_MODELS == ("independent", "colluding", "omniscient", "adaptive")
    for i, granted in enumerate(THREAT_MODELS):
        assert [grants(granted, needed) for needed in THREAT_MODELS] == [j <= i for j in range(4)]


def test_an_attack_the_experiment_does_not_grant_is_refused_naming_both_settings():
    with pytest.raises(ConfigError) as err:
        parse_experiment(experiment({"name": "alie", "num_malicious": 4}))
    message = str(err.value)
    assert "attack.name = 'alie' needs threat model 'colluding'" in message
    assert "attack.threat_model = 'independent' does not grant it" in message
    with pytest.raises(ConfigError, match="needs threat model 'omniscient'.*'colluding' does not grant"):
        parse_experiment(experiment({"name": "ipm", "num_malicious": 4, "threat_model": "colluding"}))
    with pytest.raises(ConfigError, match="attack.threat_model = 'godlike' is not one of"):
        parse_experiment(experiment({"name": "gaussian", "num_malicious": 1, "threat_model": "godlike"}))


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_every_attack_runs_under_its_own_threat_model_and_any_stronger(name):
    needed = ATTACKS[name].threat_model
    for granted in THREAT_MODELS[THREAT_MODELS.index(needed):]:
        config = parse_experiment(experiment({"name": name, "num_malicious": 2, "threat_model": granted}))
        assert config.attack.threat_model == granted
        assert to_dict(config)["attack"]["threat_model"] == granted  # recorded in the manifest's config


@pytest.mark.parametrize("attackers", [0, 2, 4, 8])
def test_the_defenders_default_does_not_read_the_number_of_attackers(attackers):
    config = parse_experiment(experiment({"name": "gaussian", "num_malicious": attackers}))
    assert config.num_malicious == attackers
    assert config.assumed_malicious == 4  # a fifth of the 20-node cohort
    assert config.rule.num_malicious == 4
    assert to_dict(config)["aggregator"]["assumed_malicious"] == 4  # the manifest holds the number


def test_the_default_is_a_fraction_of_the_cohort_capped_by_what_the_rule_tolerates():
    def assumed(name, num_nodes, **aggregator):
        return parse_experiment(experiment(aggregator={"name": name, **aggregator}, num_nodes=num_nodes)).assumed_malicious

    assert assumed("krum", 10) == 2 and assumed("median", 10) == 2 and assumed("fedavg", 7) == 1
    assert assumed("krum", 10, assumed_fraction=0.5) == 3  # n > 2f + 2 at n = 10
    assert assumed("bulyan", 11) == 2 and assumed("bulyan", 10) == 1  # n >= 4f + 3
    assert assumed("krum", 10, assumed_malicious=1) == 1  # the experiment's own number wins
    # the cohort, not the federation: 40 nodes, half of them each round
    assert parse_experiment(experiment(num_nodes=40, fraction_train=0.5)).assumed_malicious == 4
    assert {AGGREGATORS["krum"].max_tolerated(n) for n in (3, 4)} == {0}
    with pytest.raises(ConfigError, match="aggregator.assumed_fraction must be in"):
        assumed("krum", 10, assumed_fraction=1.5)


def test_a_manifest_written_before_the_defaults_means_what_it_meant_then():
    old = experiment({"name": "gaussian", "fraction": 0.3}, {"name": "krum"}, num_nodes=10)
    assert "assumed_fraction" not in old["aggregator"]  # what older manifests hold

    assert parse_recorded(old).assumed_malicious == 3  # then: the attackers drawn
    assert parse_experiment(old).assumed_malicious == 2  # now: the defender's default
    renamed = experiment({"name": "gaussian", "num_malicious": 1}, {"name": "krum", "num_malicious": None})
    assert parse_recorded(renamed).assumed_malicious == 1
    current = to_dict(parse_experiment(old))
    assert parse_recorded(current).assumed_malicious == 2  # a new manifest is read as written
