"""Devices, their flows and the edge's detection windows (bflsim.traffic), checked by hand."""

import hashlib

import numpy as np
import pytest

from bflsim.traffic import (
    Device,
    Flows,
    Window,
    assign_devices,
    class_pools,
    device_flows,
    run_edge,
    window_digest,
)

LABELS = np.array([0] * 60 + [1] * 30 + [2] * 10)  # normal, DoS, Probe held-out rows
POOLS = class_pools(LABELS)


def test_devices_sit_behind_their_edge_nodes_and_the_compromised_are_drawn_by_the_seed():
    devices = assign_devices(3, 4, compromised=2, attack_class=1, attack_rate=0.5, start=10.0,
                             rng=np.random.default_rng(7))
    again = assign_devices(3, 4, 2, 1, 0.5, 10.0, np.random.default_rng(7))

    assert [d.edge_node for d in devices] == [0] * 4 + [1] * 4 + [2] * 4
    assert devices == again
    bad = [d for d in devices if d.compromised]
    assert len(bad) == 2 and all((d.attack_class, d.attack_rate, d.start) == (1, 0.5, 10.0) for d in bad)
    assert all((d.attack_class, d.attack_rate) == (None, 0.0) for d in devices if not d.compromised)
    with pytest.raises(ValueError, match="between 0 and 12"):
        assign_devices(3, 4, 13, 1, 0.5, 0.0, np.random.default_rng(0))


def test_a_benign_device_sends_normal_rows_and_a_compromised_one_attacks_from_its_start():
    rng = np.random.default_rng(1)
    benign = device_flows(Device(0, 0), POOLS, normal_class=0, rate=5.0, duration=100.0, rng=rng)
    bad = device_flows(Device(1, 0, True, 2, 0.4, 50.0), POOLS, 0, 5.0, 100.0, rng)

    assert 400 < len(benign) < 600  # Poisson(500)
    assert np.all(np.diff(benign.time) >= 0) and set(LABELS[benign.row]) == {0} and not benign.attack.any()
    assert not bad.attack[bad.time < 50.0].any()
    late = bad.time >= 50.0
    assert 0.3 < bad.attack[late].mean() < 0.5  # attack_rate 0.4 after the start
    assert set(LABELS[bad.row[bad.attack]]) == {2} and set(LABELS[bad.row[~bad.attack]]) == {0}


def test_a_device_without_traffic_or_rows_of_its_class_is_refused():
    with pytest.raises(ValueError, match="device 3 has no traffic"):
        device_flows(Device(3, 0), POOLS, 0, rate=0.0, duration=10.0, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="no held-out rows of class 4"):
        device_flows(Device(1, 0, True, 4, 1.0, 0.0), POOLS, 0, 5.0, 10.0, np.random.default_rng(0))


def test_the_window_alerts_at_the_threshold_then_starts_again():
    window = Window(size=4, threshold=2)
    steps = [window.add(r, v) for r, v in [(10, False), (11, True), (12, False), (13, False), (14, True)]]

    assert steps[:4] == [None] * 4
    assert steps[4] == ((11, 12, 13, 14), (True, False, False, True))  # row 10 slid out; 11 and 14 attack
    assert window.add(15, True) is None  # emptied: a second alert needs two new attack verdicts
    with pytest.raises(ValueError, match="never hold more attack verdicts than flows"):
        Window(size=3, threshold=4)


def test_the_window_digest_is_sha256_of_its_documented_form():
    by_hand = hashlib.sha256(b"bflsim/window/v1\x00" + (5).to_bytes(8, "big") + (2).to_bytes(4, "big")
                             + (11).to_bytes(8, "big") + (14).to_bytes(8, "big") + bytes([1, 0])).digest()

    assert window_digest(5, [11, 14], [True, False]) == by_hand
    assert window_digest(5, [11, 14], [True, True]) != by_hand
    assert window_digest(6, [11, 14], [True, False]) != by_hand


def flows(devices, rows, times=None):
    n = len(rows)
    return Flows(np.asarray(times if times is not None else np.arange(n), float), np.asarray(devices, np.int64),
                 np.asarray(rows, np.int64), np.zeros(n, bool))


def test_the_edge_scores_micro_batches_alerts_and_drops_a_quarantined_devices_flows():
    # device 7 sends attack rows (>= 60), device 8 normal ones; quarantine at the first alert
    traffic = flows([7, 8, 7, 8, 7, 8, 7, 8, 7, 8], [60, 1, 61, 2, 62, 3, 63, 4, 64, 5])
    calls = []

    def classify(rows):
        calls.append(len(rows))
        return LABELS[rows] != 0

    outcome = run_edge(2, traffic, classify, window=3, threshold=2, micro_batch=4,
                       on_alert=lambda alert: [alert.device])

    [alert] = outcome.alerts
    assert (alert.edge_node, alert.device, alert.rows, alert.attacks, alert.time) == (2, 7, (60, 61), 2, 2.0)
    assert alert.digest == window_digest(7, (60, 61), (True, True))
    assert calls == [4, 2, 1]  # batches 2 and 3 drop device 7's flows unscored
    assert (outcome.scored, outcome.dropped, outcome.batches) == (7, 3, 3)
    assert outcome.scored_flows.device.tolist() == [7, 8, 7, 8, 8, 8, 8]
    assert outcome.verdicts.tolist() == [True, False, True, False, False, False, False]


def test_an_alert_inside_a_batch_drops_the_devices_later_flows_of_that_batch():
    traffic = flows([7, 7, 7, 7], [60, 61, 62, 63])

    outcome = run_edge(0, traffic, lambda rows: LABELS[rows] != 0, window=2, threshold=2, micro_batch=4,
                       on_alert=lambda alert: [alert.device])

    assert len(outcome.alerts) == 1 and (outcome.scored, outcome.dropped) == (2, 2)


def test_without_quarantine_a_device_keeps_alerting_and_every_flow_is_scored():
    traffic = flows([7] * 6, [60, 61, 62, 63, 64, 65])

    outcome = run_edge(0, traffic, lambda rows: LABELS[rows] != 0, window=2, threshold=2, micro_batch=5)

    assert [a.rows for a in outcome.alerts] == [(60, 61), (62, 63), (64, 65)]
    assert (outcome.scored, outcome.dropped, outcome.batches) == (6, 0, 2)


def test_a_stream_in_slices_gives_what_it_gives_whole():
    rng = np.random.default_rng(3)
    devices = assign_devices(1, 6, 2, 1, 0.6, 20.0, rng)
    traffic = Flows.concat([device_flows(d, POOLS, 0, 2.0, 100.0, rng) for d in devices])
    classify = lambda rows: LABELS[rows] != 0
    quarantine = lambda alert: [alert.device]
    whole = run_edge(0, traffic, classify, window=6, threshold=4, micro_batch=8, on_alert=quarantine)

    windows, quarantined, alerts, scored = None, (), [], 0
    for start in range(0, 100, 25):
        part = traffic.take((traffic.time >= start) & (traffic.time < start + 25))
        outcome = run_edge(0, part, classify, window=6, threshold=4, micro_batch=8, on_alert=quarantine,
                           windows=windows, quarantined=quarantined)
        windows, quarantined = outcome.windows, outcome.quarantined
        alerts += outcome.alerts
        scored += outcome.scored

    assert [(a.device, a.rows) for a in alerts] == [(a.device, a.rows) for a in whole.alerts]
    assert scored == whole.scored and quarantined == whole.quarantined == {a.device for a in whole.alerts}
    assert {d.index for d in devices if d.compromised} == set(quarantined)  # a perfect detector finds both
