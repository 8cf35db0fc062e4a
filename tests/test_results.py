"""Run folders: incremental tidy rows, manifest contents, and failure status."""

import json

import numpy as np
import pandas as pd

from bflsim.results import (
    CONFUSION_COLUMNS,
    METRIC_COLUMNS,
    RunFolder,
    read_confusion,
    read_metrics,
)


def test_rows_reach_disk_as_they_are_logged(tmp_path):
    run = RunFolder.create(tmp_path, "exp", {"name": "exp"}, {"data_seed": 1})

    run.log({"loss": 0.5, "accuracy": 0.9}, model="dnn", split="train", epoch=1)
    on_disk = pd.read_csv(run.metrics_path)

    assert tuple(on_disk.columns) == METRIC_COLUMNS
    assert on_disk[["metric", "value", "epoch"]].values.tolist() == [["loss", 0.5, 1], ["accuracy", 0.9, 1]]
    assert on_disk["round"].isna().all()


def test_manifest_records_config_seeds_versions_and_status(tmp_path):
    run = RunFolder.create(tmp_path, "exp", {"name": "exp", "x": (1, 2)}, {"data_seed": 7})

    run.finish(wall_seconds=1.5)
    manifest = json.loads((run.path / "manifest.json").read_text())

    assert manifest["status"] == "complete"
    assert manifest["seeds"] == {"data_seed": 7}
    assert manifest["config"]["x"] == [1, 2]
    assert "numpy" in manifest["versions"] and "python" in manifest["versions"]
    assert manifest["run_id"] == run.path.name and manifest["wall_seconds"] == 1.5


def test_confusion_is_stored_in_long_form(tmp_path):
    run = RunFolder.create(tmp_path, "exp", {}, {})

    run.log_confusion(np.array([[5, 1], [0, 4]]), ("normal", "attack"), model="m", split="test")
    table = read_confusion([run.path])

    assert tuple(table.columns) == CONFUSION_COLUMNS
    assert table.set_index(["true", "predicted"])["count"].to_dict() == {
        ("normal", "normal"): 5, ("normal", "attack"): 1, ("attack", "normal"): 0, ("attack", "attack"): 4,
    }


def test_two_runs_in_the_same_second_get_distinct_folders(tmp_path):
    first = RunFolder.create(tmp_path, "exp", {}, {})
    second = RunFolder.create(tmp_path, "exp", {}, {})

    assert first.path != second.path
    assert len(read_metrics([first.path, second.path])) == 0
