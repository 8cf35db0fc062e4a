"""The closed loop's devices and traffic as every process draws them (bflsim.edge_node)."""

import numpy as np
import pytest

from bflsim.config import ConfigError, parse_experiment
from bflsim.edge_node import load_data, loop_attack_class, loop_devices, node_traffic

BASE = {"experiment": {"name": "loop", "kind": "federated"},
        "data": {"dataset": "synthetic", "synthetic": {"num_samples": 1500}},
        "federation": {"num_nodes": 4, "rounds": 3}}


def loop_config(**loop):
    return parse_experiment({**BASE, "loop": {"devices_per_node": 3, "compromised": 2, "duration_seconds": 100.0,
                                              "start_seconds": 40.0, "flows_per_second": 2.0, **loop}})


def test_devices_sit_behind_their_nodes_and_the_compromised_send_the_chosen_class_after_their_start():
    config = loop_config(attack_class="DoS", attack_rate=1.0)
    data = load_data(config.data)
    devices = loop_devices(config)

    assert [d.edge_node for d in devices] == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    bad = [d for d in devices if d.compromised]
    assert len(bad) == 2 and {d.attack_class for d in bad} == {list(data.class_names).index("DoS")}
    for node in range(4):
        flows = node_traffic(config, node)
        assert set(flows.device.tolist()) == {d.index for d in devices if d.edge_node == node}
        for d in devices:
            mine = flows.device == d.index
            labels = data.y_val[flows.row[mine]]
            if d.compromised and d.edge_node == node:
                assert (labels[flows.time[mine] >= 40.0] == d.attack_class).all()  # rate 1: every flow after the start
                assert (labels[flows.time[mine] < 40.0] == data.normal_class).all()
            elif d.edge_node == node:
                assert (labels == data.normal_class).all()


def test_every_process_draws_the_same_traffic_and_another_seed_draws_other_traffic():
    config = loop_config()
    first = node_traffic(config, 1)
    node_traffic.cache_clear()
    loop_devices.cache_clear()
    again = node_traffic(config, 1)
    other = node_traffic(loop_config(seed=1), 1)

    assert np.array_equal(first.row, again.row) and np.array_equal(first.time, again.time)
    assert not np.array_equal(first.row[:20], other.row[:20])


def test_the_attack_class_defaults_to_the_most_frequent_and_a_wrong_name_is_refused():
    data = load_data(loop_config().data)
    counts = np.bincount(data.y_val)
    attacks = [c for c in range(data.num_classes) if c != data.normal_class]

    assert loop_attack_class(loop_config(), data) == max(attacks, key=lambda c: counts[c])
    with pytest.raises(ConfigError, match=r"loop.attack_class = 'normal' is not an attack class of synthetic; "
                                          r"expected one of \['Botnet'"):
        loop_attack_class(loop_config(attack_class="normal"), data)
    with pytest.raises(ConfigError, match="'Worm' is not an attack class"):
        loop_attack_class(loop_config(attack_class="Worm"), data)
