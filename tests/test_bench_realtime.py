"""The real-time benchmark's pieces on small inputs: what they measure, never how fast."""

import numpy as np

from bflsim.bench.realtime import realtime_rows, time_alert_finality, time_pipeline
from bflsim.ledger import EmbeddedLedger

LABELS = np.array([0] * 80 + [1] * 20)
X = np.eye(2, dtype=np.float32)[(LABELS != 0).astype(int)].repeat(3, axis=1)  # 6 features; attack rows differ


def perfect(x):
    """A detector that is always right on X: class 1 when the fourth feature is set."""
    return np.stack([1.0 - x[:, 3], x[:, 3]], axis=1)


def test_the_pipeline_scores_every_flow_and_alerts_on_the_compromised_devices():
    seconds, scored, alerts = time_pipeline(lambda rows: np.argmax(perfect(X[rows]), axis=1) != 0, LABELS, 0,
                                            nodes_devices=10, duration=60.0, rate=2.0, batch=16, window=10,
                                            threshold=5)

    assert seconds > 0 and 1000 < scored < 1400  # Poisson(10 devices x 60 s x 2 flows/s), none dropped
    assert alerts >= 2  # two compromised devices, half their flows attacks: each fills windows


def test_alert_finality_times_one_receipt_per_alert_on_a_registry_that_quarantines_nothing():
    ledger = EmbeddedLedger()

    seconds = time_alert_finality(ledger, 4)

    assert len(seconds) == 4 and all(s > 0 for s in seconds)
    alerted = [e for e in ledger.events() if e.name == "DeviceAlerted"]
    assert [e.args["alerts"] for e in alerted] == [1, 2, 3, 4]
    assert not [e for e in ledger.events() if e.name == "DeviceQuarantined"]


def test_the_rows_name_every_batch_the_pipeline_and_the_chain_beside_the_papers_8_ms():
    rows = realtime_rows(X, LABELS, 0, perfect, calls=20, batches=(1, 8), alerts=3, anvil=False)

    quantities = [(r[0], r[1]) for r in rows]
    assert ("detection", "batch_1_p50_seconds") in quantities and ("detection", "batch_8_p99_seconds") in quantities
    assert [r[5] for r in rows if r[1] == "batch_1_p50_seconds"] == [0.008]
    assert {q for b, q in quantities if b == "edge_loop"} == {"batch_1_flows_per_second", "batch_64_flows_per_second"}
    assert {q for b, q in quantities if b == "alert_finality"} == {"embedded_p50_seconds", "embedded_p99_seconds"}
    assert all(r[2] > 0 for r in rows)
