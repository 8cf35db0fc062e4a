"""--tensorboard: the rows with a step become TensorBoard scalars as they are logged."""

import pytest

from bflsim.config import parse_experiment
from bflsim.runfolder import RunFolder, tracking


def _scalars(logdir):
    import tensorflow as tf
    from tensorflow.python.summary.summary_iterator import summary_iterator

    found = {}
    for path in sorted(logdir.glob("events.out.tfevents.*")):
        for event in summary_iterator(str(path)):
            for value in event.summary.value:
                found[(value.tag, event.step)] = float(tf.make_ndarray(value.tensor))
    return found


@pytest.fixture
def tensorboard_root(tmp_path):
    tracking.set_root(tmp_path / "tb")
    yield tmp_path / "tb"
    tracking.set_root(None)


def test_round_and_epoch_rows_become_scalars_and_node_or_class_rows_do_not(tmp_path, tensorboard_root):
    config = parse_experiment({"name": "tiny", "kind": "federated", "models": {"names": ["dnn"]}})
    with RunFolder.start(tmp_path / "runs", config) as run:
        run.log({"accuracy": 0.5, "f1_macro": 0.4}, model="dnn", split="test", round=0)
        run.log({"accuracy": 0.8}, model="dnn", split="test", round=1)
        run.log({"gas_used": 396_156}, model="dnn", split="round", round=1)
        run.log({"loss": 0.3}, model="dnn", split="train", epoch=2)
        run.log({"accuracy": 0.1}, model="dnn", split="test", round=1, node=3)
        run.log({"f1": 0.7}, model="dnn", split="test", round=1, class_name="DoS")
        run.log({"train_seconds": 9.0}, model="dnn", split="train")

    scalars = _scalars(tensorboard_root / run.path.name)

    assert scalars == {("test/accuracy", 0): pytest.approx(0.5), ("test/f1_macro", 0): pytest.approx(0.4),
                       ("test/accuracy", 1): pytest.approx(0.8), ("round/gas_used", 1): 396_156.0,
                       ("train/loss", 2): pytest.approx(0.3)}


def test_without_the_option_no_events_are_written(tmp_path):
    tracking.set_root(None)
    config = parse_experiment({"name": "tiny", "kind": "federated"})
    with RunFolder.start(tmp_path / "runs", config) as run:
        run.log({"accuracy": 0.5}, model="cnn_lstm", split="test", round=0)
    assert run.scalar_sink is None and not list(tmp_path.rglob("events.out.tfevents.*"))


def test_the_cli_flag_sets_the_folder_for_the_runs_it_starts(tmp_path, monkeypatch):
    from bflsim import cli

    seen = {}
    monkeypatch.setattr(cli, "cmd_run", lambda args: seen.setdefault("root", tracking.root()) and 0)
    parser_args = ["run", "experiments/quick_poisoning.toml", "--tensorboard", str(tmp_path / "tb")]
    cli.build_parser()  # the flag exists on run, sweep, resume and demo
    try:
        cli.main(parser_args)
    finally:
        tracking.set_root(None)
    assert seen["root"] == (tmp_path / "tb").resolve()
