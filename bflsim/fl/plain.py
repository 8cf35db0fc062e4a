"""The lower bound for the federated benchmark: a plain single-process Keras loop.

Same data, nodes, rounds, epochs, seeds and aggregation rule as a federated run, with no
Flower and no Ray: each round trains the cohort's nodes one after the other in this
process (:func:`bflsim.fl.node.train_locally`, the same code a ClientApp runs), aggregates
with :mod:`bflsim.aggregators`, and scores the global model on the test split.

    python -m bflsim.fl.plain EXPERIMENT.toml [--set KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from bflsim.aggregators import aggregate
from bflsim.config import ExperimentConfig, load_experiment, with_overrides
from bflsim.fl.node import cached_model, initial_weights, load_data, malicious_nodes, train_locally
from bflsim.metrics import confusion_matrix, summary_metrics
from bflsim.vectors import flatten, unflatten


def run_plain(config: ExperimentConfig, data_dir: str | None = None) -> dict[str, float]:
    """Train all rounds in-process; return final accuracy and timings."""
    started = time.perf_counter()
    data = load_data(config.data, data_dir)
    model = cached_model(config, data.num_features, data.num_classes)
    weights = initial_weights(config, data.num_features, data.num_classes)
    fed, agg = config.federation, config.aggregator
    loop_started = time.perf_counter()
    accuracy = float("nan")
    poisoned_accepted = 0
    for server_round in range(1, fed.rounds + 1):
        rng = np.random.default_rng([fed.seed, server_round])
        cohort = sorted(int(i) for i in rng.choice(fed.num_nodes, size=fed.cohort_size, replace=False))
        results = [train_locally(config, node, server_round, weights, data_dir) for node in cohort]
        rows, shapes = [], None
        for result in results:
            flat, shapes = flatten(result.weights)
            rows.append(flat)
        selection = aggregate(
            agg.name, np.stack(rows), num_samples=np.array([r.num_examples for r in results]),
            num_malicious=config.declared_malicious, num_selected=agg.num_selected, trim_fraction=agg.trim_fraction,
        )
        weights = unflatten(selection.aggregate.astype(np.float32), shapes)
        bad = set(malicious_nodes(config, server_round).tolist())
        poisoned_accepted += sum(cohort[i] in bad for i in selection.selected)
        model.set_weights(weights)
        proba = model.predict(data.x_test, batch_size=4096, verbose=0)
        cm = confusion_matrix(data.y_test, np.argmax(proba, axis=1), data.num_classes)
        accuracy = summary_metrics(cm, data.normal_class)["accuracy"]
    return {
        "final_accuracy": accuracy,
        "poisoned_accepted": poisoned_accepted,
        "loop_seconds": time.perf_counter() - loop_started,
        "setup_seconds": loop_started - started,
    }


def main(argv: list[str] | None = None) -> int:
    from bflsim.cli import parse_overrides

    parser = argparse.ArgumentParser(prog="python -m bflsim.fl.plain", description=__doc__)
    parser.add_argument("experiment")
    parser.add_argument("--set", action="append", default=[])
    parser.add_argument("--data-dir")
    args = parser.parse_args(argv)
    config = load_experiment(args.experiment)
    if args.set:
        config = with_overrides(config, parse_overrides(args.set))
    print(json.dumps(run_plain(config, args.data_dir)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
