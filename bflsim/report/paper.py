"""The reference paper's numbers, to print beside ours.

Lenka, Bajpai, Tiwari, Kanathey, "Blockchain-enabled deep learning framework for
cybersecurity and secure IoT data analytics": Tables 3, 4 and 5 of its evaluation, restated
in the project's shared notes (PAPER.md) and copied here as fractions. The paper gives no
seeds, no intervals and no averaging mode (macro or weighted) for Table 3; its Table 3 P/R/F1
sit within 0.001 of its accuracy, which is what weighted averages do (weighted recall *is*
accuracy), so they are compared with our weighted F1. Table 5's supports are the class counts
of all of KDDTrain+ (125,973 rows), not of a test split.
"""

from __future__ import annotations

from collections.abc import Mapping

PAPER = "Lenka et al."

TABLE3 = {  # CIC-IDS2017, "averaged over 5 runs": accuracy, precision, recall, F1, FPR
    "decision_tree": {"accuracy": 0.9421, "precision": 0.941, "recall": 0.942, "f1": 0.941, "fpr": 0.062},
    "random_forest": {"accuracy": 0.9655, "precision": 0.966, "recall": 0.965, "f1": 0.965, "fpr": 0.038},
    "linear_svm": {"accuracy": 0.9288, "precision": 0.931, "recall": 0.929, "f1": 0.929, "fpr": 0.075},
    "dnn": {"accuracy": 0.9573, "precision": 0.958, "recall": 0.957, "f1": 0.957, "fpr": 0.047},
    "cnn_lstm": {"accuracy": 0.9892, "precision": 0.989, "recall": 0.989, "f1": 0.989, "fpr": 0.012},
}
TABLE3_DATASET = "cic-ids2017"

TABLE4 = {  # 10 edge nodes, 50 rounds, 2 malicious nodes sending Gaussian noise
    "standard_no_attack": {"accuracy": 0.9785, "success_rate": 0.0},
    "standard_under_attack": {"accuracy": 0.7341, "success_rate": 1.0},
    "blockchain_secured": {"accuracy": 0.9618, "success_rate": 0.0},
}

TABLE5 = {  # CNN-LSTM per class on NSL-KDD: precision, recall, F1, support
    "Normal": {"precision": 0.993, "recall": 0.991, "f1": 0.992, "support": 67_343},
    "DoS": {"precision": 0.984, "recall": 0.986, "f1": 0.985, "support": 45_927},
    "Probe": {"precision": 0.963, "recall": 0.948, "f1": 0.955, "support": 11_656},
    "U2R": {"precision": 0.924, "recall": 0.901, "f1": 0.912, "support": 52},
    "R2L": {"precision": 0.935, "recall": 0.917, "f1": 0.926, "support": 995},
}
TABLE5_DATASET = "nsl-kdd"


def table3_row(dataset: str, model: str) -> Mapping[str, float] | None:
    """The paper's Table 3 row for ``model``, when ``dataset`` is the one it measured."""
    return TABLE3.get(model) if dataset == TABLE3_DATASET else None


def table4_row(*, aggregator: str, attack: str, num_nodes: int, num_malicious: int, rounds: int,
               ledger: str) -> Mapping[str, float] | None:
    """The paper's Table 4 row for a run of its setting (10 nodes, 2 Gaussian attackers, 50
    rounds), else None: a value is shown only beside the setting it was measured in."""
    if (num_nodes, rounds) != (10, 50):
        return None
    if attack == "none" and aggregator == "fedavg":
        return TABLE4["standard_no_attack"]
    if attack != "gaussian" or num_malicious != 2:
        return None
    if aggregator == "fedavg":  # with or without a ledger: FedAvg lets every update in
        return TABLE4["standard_under_attack"]
    if aggregator == "krum" and ledger != "none":
        return TABLE4["blockchain_secured"]
    return None


def table5_row(dataset: str, model: str, class_name: str) -> Mapping[str, float] | None:
    """The paper's Table 5 row for ``class_name`` (the CNN-LSTM on NSL-KDD)."""
    return TABLE5.get(class_name) if (dataset, model) == (TABLE5_DATASET, "cnn_lstm") else None
