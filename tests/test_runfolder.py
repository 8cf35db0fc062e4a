"""Run folders: incremental tidy rows, the manifest, the lifecycle that sets the status, the reader."""

import json

import numpy as np
import pandas as pd
import pytest

from bflsim.config import parse_experiment
from bflsim.runfolder import (
    CONFUSION_COLUMNS,
    METRIC_COLUMNS,
    RunFolder,
    RunStopped,
    read_confusion,
    read_metrics,
    read_run,
)

CONFIG = parse_experiment({"experiment": {"name": "exp"}, "data": {"seed": 7}, "models": {"names": ["dnn"]}})


def test_rows_reach_disk_as_they_are_logged(tmp_path):
    run = RunFolder.create(tmp_path, CONFIG)

    run.log({"loss": 0.5, "accuracy": 0.9}, model="dnn", split="train", epoch=1)
    on_disk = pd.read_csv(run.metrics_path)

    assert tuple(on_disk.columns) == METRIC_COLUMNS
    assert on_disk[["metric", "value", "epoch"]].values.tolist() == [["loss", 0.5, 1], ["accuracy", 0.9, 1]]
    assert on_disk["round"].isna().all()


def test_manifest_records_config_seeds_versions_and_status(tmp_path):
    with RunFolder.start(tmp_path, CONFIG, data={"rows": 3}) as run:
        run.write_manifest(wall_seconds=1.5)
    manifest = json.loads((run.path / "manifest.json").read_text())

    assert manifest["status"] == "complete" and manifest["finished"]
    assert manifest["seeds"] == {"data_seed": 7, "train_seed": 42}
    assert manifest["config"]["models"]["names"] == ["dnn"]  # tuples become lists
    assert manifest["data"] == {"rows": 3}
    assert "numpy" in manifest["versions"] and "python" in manifest["versions"]
    assert manifest["run_id"] == run.path.name and manifest["wall_seconds"] == 1.5


@pytest.mark.parametrize(
    ("error", "status"),
    [(RunStopped("round 3: too few updates"), "stopped"), (KeyboardInterrupt(), "interrupted"),
     (ValueError("bad"), "failed")],
)
def test_the_lifecycle_sets_the_status_from_what_ended_the_run(tmp_path, error, status):
    with pytest.raises(type(error)), RunFolder.start(tmp_path, CONFIG) as run:
        run.log({"accuracy": 0.5}, split="test", round=1)
        raise error

    manifest = json.loads((run.path / "manifest.json").read_text())
    assert manifest["status"] == status and manifest["error"]
    assert len(pd.read_csv(run.metrics_path)) == 1  # the rows written before stay


def test_read_run_gives_the_typed_config_back(tmp_path):
    with RunFolder.start(tmp_path, CONFIG) as run:
        pass

    found = read_run(run.path)

    assert found.config == CONFIG and found.status == "complete" and found.run_id == run.run_id
    with pytest.raises(FileNotFoundError, match="not a run folder"):
        read_run(tmp_path)


def test_confusion_is_stored_in_long_form_per_round(tmp_path):
    run = RunFolder.create(tmp_path, CONFIG)

    run.log_confusion(np.array([[5, 1], [0, 4]]), ("normal", "attack"), model="m", split="test", round=3)
    table = read_confusion([read_run(run.path)])

    assert tuple(table.columns) == CONFUSION_COLUMNS
    assert table["round"].tolist() == [3] * 4
    assert table.set_index(["true", "predicted"])["count"].to_dict() == {
        ("normal", "normal"): 5, ("normal", "attack"): 1, ("attack", "normal"): 0, ("attack", "attack"): 4,
    }


def test_two_runs_in_the_same_second_get_distinct_folders(tmp_path):
    first = RunFolder.create(tmp_path, CONFIG)
    second = RunFolder.create(tmp_path, CONFIG)

    assert first.path != second.path
    assert len(read_metrics([read_run(first.path), read_run(second.path)])) == 0
