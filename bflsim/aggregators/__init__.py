"""Robust aggregation rules as pure records over a stacked (n, d) matrix of updates.

Every rule is one frozen dataclass in its own module (:mod:`.fedavg`, :mod:`.krum`,
:mod:`.median`, ...), built from its parameters and called with the matrix::

    rule = AGGREGATORS["krum"](num_malicious=2)
    rule.check(len(updates))                 # AggregatorError with a sentence if impossible
    selection = rule(updates, num_samples)   # Selection: aggregate, selected, scores, weights

A rule that needs more than the updates (``rule.needs``: FLTrust the server's reference
update, centered clipping the previous aggregate, FoolsGold the nodes' history; FLAME and DnC
draw from the round's seed) takes a :class:`RoundContext` as third argument.
Rows are deltas (local - global). ``weights[i]`` is row i's coefficient in the aggregate
averaged over coordinates (for rules that rescale rows first, its share of the mean of the
rescaled rows); the weights sum to 1, or are all 0 where a rule trusts no row and returns the
zero update, so the weights of the malicious rows add up to the poisoned share. Rows holding NaN or inf are refused (:class:`NonFiniteUpdateError`
names them). Arithmetic is in float64; the aggregate keeps the input's floating dtype.
:func:`decide_round` is the whole server decision of a round, shared by the strategy, the
audit and the plain loop. The plain functions (:func:`krum`, :func:`median`, ...) stay for
notebooks and cross-checks.

A new rule: one module with its record, and one line in :data:`AGGREGATORS`.
"""

from bflsim.aggregators.base import (
    CONTEXT_NEEDS,
    DISTANCE_VERSIONS,
    AggregatorError,
    NonFiniteUpdateError,
    RoundContext,
    Rule,
    Selection,
    pairwise_sq_distances,
    top_f_outliers,
)
from bflsim.aggregators.bulyan import Bulyan, bulyan, check_bulyan
from bflsim.aggregators.carry import DefenceState
from bflsim.aggregators.clipping import (
    CenteredClipping,
    NormBounding,
    centered_clipping,
    norm_bounding,
)
from bflsim.aggregators.decision import RoundDecision, apply_update, decide_round, stack_deltas
from bflsim.aggregators.dnc import DnC, check_dnc, dnc
from bflsim.aggregators.fedavg import FedAvg, check_fedavg, fedavg
from bflsim.aggregators.flame import Flame, check_flame, flame
from bflsim.aggregators.fltrust import FLTrust, fltrust
from bflsim.aggregators.foolsgold import FoolsGold, foolsgold
from bflsim.aggregators.geomed import GeometricMedian, geometric_median
from bflsim.aggregators.krum import (
    Krum,
    MultiKrum,
    check_krum,
    check_multikrum,
    krum,
    krum_scores,
    multikrum,
)
from bflsim.aggregators.median import (
    Median,
    TrimmedMean,
    check_median,
    check_trimmed_mean,
    median,
    trimmed_mean,
)

AGGREGATORS: dict[str, type[Rule]] = {
    rule.name: rule
    for rule in (FedAvg, Krum, MultiKrum, Median, TrimmedMean, Bulyan, GeometricMedian, NormBounding,
                 CenteredClipping, FLTrust, Flame, DnC, FoolsGold)
}
"""Every rule by the name experiment files use (``aggregator.name``)."""

__all__ = [
    "AGGREGATORS",
    "CONTEXT_NEEDS",
    "DISTANCE_VERSIONS",
    "AggregatorError",
    "Bulyan",
    "CenteredClipping",
    "DefenceState",
    "DnC",
    "FLTrust",
    "FedAvg",
    "Flame",
    "FoolsGold",
    "GeometricMedian",
    "Krum",
    "Median",
    "MultiKrum",
    "NonFiniteUpdateError",
    "NormBounding",
    "RoundContext",
    "RoundDecision",
    "Rule",
    "Selection",
    "TrimmedMean",
    "apply_update",
    "bulyan",
    "centered_clipping",
    "check_bulyan",
    "check_dnc",
    "check_fedavg",
    "check_flame",
    "check_krum",
    "check_median",
    "check_multikrum",
    "check_trimmed_mean",
    "decide_round",
    "dnc",
    "fedavg",
    "flame",
    "fltrust",
    "foolsgold",
    "geometric_median",
    "krum",
    "krum_scores",
    "median",
    "multikrum",
    "norm_bounding",
    "pairwise_sq_distances",
    "stack_deltas",
    "top_f_outliers",
    "trimmed_mean",
]
