"""The closed loop on a run's registry (bflsim.ledger.loop): genuine alerts quarantine, false
ones are disputed, forged ones refused, and every transaction goes to the trail."""

from dataclasses import replace

import pytest
from test_ledger_session import start_session

from bflsim.ledger import sign_alert_tx
from bflsim.ledger.identity import node_identities
from bflsim.ledger.loop import LoopSession, ReceivedAlert
from bflsim.runfolder import read_transactions
from bflsim.traffic import window_digest

BEHIND = [(10, 0), (11, 0), (12, 1), (13, 1)]
THRESHOLD = 2


@pytest.fixture
def loop(tmp_path):
    session = start_session(tmp_path)
    loop = LoopSession(session)
    loop.setup(BEHIND, alerts_to_quarantine=1)
    return loop


def alerts_of(loop, wanted, *, signer=None):
    """Signed alerts: ``wanted`` is (node, device, verdicts) in the order each node raised them."""
    contexts, _ = loop.contexts(sorted({node for node, _, _ in wanted}))
    identities = node_identities(loop.session.config)
    offsets, out = {}, []
    for node, device, verdicts in wanted:
        ctx = replace(contexts[node], nonce=contexts[node].nonce + offsets.get(node, 0))
        offsets[node] = offsets.get(node, 0) + 1
        rows = tuple(range(100 + device, 100 + device + len(verdicts)))
        raw = sign_alert_tx(signer or identities[node], ctx, device, window_digest(device, rows, verdicts), sum(verdicts))
        out.append(ReceivedAlert(node, device, 5.0, rows, tuple(verdicts), sum(verdicts), raw))
    return out, contexts


def genuine(alert):
    return alert.score >= THRESHOLD  # stands in for the server scoring the window's rows


def test_a_genuine_alert_quarantines_its_device_and_goes_to_the_trail(loop):
    alerts, contexts = alerts_of(loop, [(0, 10, (True, True, False))])

    quarantined = loop.settle(alerts, contexts, genuine)

    assert quarantined == {10} and alerts[0].outcome == "quarantined" and alerts[0].gas_used > 0
    assert loop.ledger.device_info(10, 0).quarantined and not loop.ledger.device_info(11, 0).quarantined
    rows = [t for t in read_transactions(loop.session.run_dir) if t["round"] == loop.loop_round]
    assert [t["kind"] for t in rows] == ["set_quarantine_rule", "register_devices", "alert"]
    assert rows[-1]["node"] == 0 and rows[-1]["tx_hash"] == alerts[0].tx_hash and rows[-1]["raw"]


def test_a_false_alert_is_disputed_and_the_nodes_later_alerts_of_the_slice_are_refused(loop):
    alerts, contexts = alerts_of(loop, [(1, 12, (True, False, False)), (1, 13, (True, True)), (0, 11, (True, True))])

    quarantined = loop.settle(alerts, contexts, genuine)

    assert [a.outcome for a in alerts] == ["disputed", "refused", "quarantined"]
    assert "nonce gap" in alerts[1].reason and quarantined == {11}
    assert loop.ledger.node_info(loop.session.addresses[1]).rejections == 1
    disputes = [e.args for e in loop.ledger.events() if e.name == "AlertDisputed"]
    assert disputes == [{"device": 12, "node": loop.session.addresses[1], "windowDigest": alerts[0].digest,
                         "rejections": 1}]


def test_a_forged_or_mismatched_alert_is_refused_unrelayed(loop):
    other = node_identities(loop.session.config)[2]
    forged, contexts = alerts_of(loop, [(0, 10, (True, True))], signer=other)
    mismatched, contexts2 = alerts_of(loop, [(1, 12, (True, True))])
    mismatched[0].verdicts = (True, True, True)  # not the window the node signed for

    assert loop.settle(forged, contexts, genuine) == set() and forged[0].outcome == "refused"
    assert "not by the node's key" in forged[0].reason
    assert loop.settle(mismatched, contexts2, genuine) == set()
    assert mismatched[0].outcome == "refused" and "window digest mismatch" in mismatched[0].reason
    assert not [e for e in loop.ledger.events() if e.name == "DeviceAlerted"]


def test_with_two_alerts_to_quarantine_the_second_one_quarantines(tmp_path):
    loop = LoopSession(start_session(tmp_path))
    loop.setup(BEHIND, alerts_to_quarantine=2)
    alerts, contexts = alerts_of(loop, [(0, 10, (True, True)), (0, 10, (True, True))])

    assert loop.settle(alerts, contexts, genuine) == {10}
    assert [a.outcome for a in alerts] == ["relayed", "quarantined"]
