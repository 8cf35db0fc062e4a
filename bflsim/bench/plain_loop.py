"""The lower bound for the federated benchmark: a plain single-process Keras loop.

Same data, nodes, rounds, epochs, seeds, cohort sampling and round decision as a federated
run, with no Flower and no Ray: each round trains the cohort's nodes one after the other in
this process (:func:`bflsim.edge_node.train_locally`, the code a ClientApp runs), decides
the round with :func:`bflsim.aggregators.decide_round` (the strategy's and the audit's), and
scores the global model on the test split.

    python -m bflsim.bench.plain_loop EXPERIMENT.toml [--set KEY=VALUE ...] [--all-points] [--only POINT]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from bflsim.aggregators import DefenceState, decide_round
from bflsim.config import ExperimentConfig, parse_overrides
from bflsim.edge_node import load_data, root_update, train_locally
from bflsim.hashing import digest_hex, weights_digest
from bflsim.metrics import score_probabilities
from bflsim.models import initial_weights, predict
from bflsim.plans import load_plan, with_point_overrides


def run_plain(config: ExperimentConfig, data_dir: str | None = None) -> dict[str, float]:
    """Train all rounds in-process; return final accuracy and timings."""
    started = time.perf_counter()
    data = load_data(config.data, data_dir)
    weights = initial_weights(config.models, config.train, data.num_features, data.num_classes)
    fed = config.federation
    loop_started = time.perf_counter()
    accuracy = float("nan")
    poisoned_accepted = 0
    train_seconds = 0.0
    defence = DefenceState(config.rule, config.aggregator.seed,
                           lambda r, g: root_update(config, r, g, data_dir))
    for server_round in range(1, fed.rounds + 1):
        cohort = fed.sample_cohort(server_round, range(fed.num_nodes))
        started_training = time.perf_counter()
        results = [train_locally(config, node, server_round, weights, data_dir, cohort) for node in cohort]
        train_seconds += time.perf_counter() - started_training
        updates = [r.weights for r in results]
        decision = decide_round(
            config.rule, cohort, updates, weights, [r.num_examples for r in results],
            config.aggregator.reject_factor, context=defence.context(server_round, cohort, updates, weights),
        )
        defence.advance(cohort, updates, weights)
        weights = decision.new_weights
        poisoned_accepted += len(set(decision.selected) & set(config.malicious_nodes(server_round).tolist()))
        proba = predict(config.models, config.train, weights, data.x_test, data.num_classes)
        accuracy = score_probabilities(proba, data.y_test, data.num_classes, data.normal_class)[0]["accuracy"]
    return {
        "final_accuracy": accuracy,
        "final_model_digest": digest_hex(weights_digest(weights)),
        "poisoned_accepted": poisoned_accepted,
        "loop_seconds": time.perf_counter() - loop_started,
        "train_seconds": train_seconds,
        "setup_seconds": loop_started - started,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bflsim.bench.plain_loop", description=__doc__)
    parser.add_argument("experiment")
    parser.add_argument("--set", action="append", default=[])
    parser.add_argument("--data-dir")
    parser.add_argument("--all-points", action="store_true",
                        help="every point of the plan, one JSON line each (one process: traced once)")
    parser.add_argument("--only", action="append", default=[], metavar="POINT")
    args = parser.parse_args(argv)
    plan = load_plan(args.experiment)
    if args.only:
        plan = plan.only(args.only)
    points = plan.points if args.all_points else plan.points[:1]
    for point, config in points:
        if args.set:
            config = with_point_overrides(config, parse_overrides(args.set))
        print(json.dumps({"point": point.name, **run_plain(config, args.data_dir)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
