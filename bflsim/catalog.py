"""What experiment files can name: every defence, attack, dataset and model, with parameters.

``bflsim list`` prints it from the registries themselves (:data:`bflsim.aggregators.AGGREGATORS`,
:data:`bflsim.attacks.ATTACKS`, :data:`bflsim.data.DATASETS`, :data:`bflsim.models.MODELS`),
so it cannot drift from what the config accepts.
"""

from __future__ import annotations

from dataclasses import MISSING, fields
from typing import Any

from bflsim.aggregators import AGGREGATORS
from bflsim.attacks import ATTACKS
from bflsim.data import DATASETS
from bflsim.models import MODELS

KNOWS = {"independent": "its own data and update", "colluding": "the coalition's honest updates",
         "omniscient": "every honest update of the round", "adaptive": "every honest update and the defence"}


NEEDS = {"reference": "the server's clean root set (federation.root_size)",
         "previous": "the previous round's model change", "history": "each node's past updates"}


def parameters(record: type) -> str:
    """``name=default, ...`` of a record's settable fields (``num_malicious`` is the
    aggregator's ``assumed_malicious``, set outside ``params``)."""
    shown = []
    for item in fields(record):
        if not item.init or item.name == "num_malicious":
            continue
        default: Any = item.default
        shown.append(f"{item.name}=" + ("(required)" if default is MISSING else
                                        repr(default) if isinstance(default, str) else str(default)))
    return ", ".join(shown) or "none"


def catalog_lines() -> list[str]:
    """The catalog as text lines, one entry per line."""
    lines = ["defences ([aggregator] name, [aggregator.params]):"]
    lines += [f"  {name:18s} {rule.label}; params: {parameters(rule)}; " + "".join(f"needs {NEEDS[n]}; " for n in sorted(rule.needs))
              + rule.reference for name, rule in AGGREGATORS.items()]
    lines.append("attacks ([attack] name, [attack.params]):")
    lines += [f"  {name:18s} {attack.label}; threat model {attack.threat_model} (knows {KNOWS[attack.threat_model]}); params: {parameters(attack)}; "
              f"{attack.reference}" for name, attack in ATTACKS.items()]
    lines.append("datasets ([data] dataset):")
    lines += [f"  {name:18s} {dataset.label}" + (f"; {dataset.reference}" if dataset.reference else "")
              for name, dataset in DATASETS.items()]
    lines.append("models ([models] names):")
    lines += [f"  {name:18s} {model.label}" + ("; federated" if model.federated else "; centralized only")
              for name, model in MODELS.items()]
    return lines
