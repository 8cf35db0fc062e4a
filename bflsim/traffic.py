"""IoT devices behind edge nodes, their flows, and the edge's per-device detection windows.

The paper's tiers: IoT devices (tier 1) send their traffic through an edge node (tier 2),
which scores it with the federated detector. Here every device is a :class:`Device` fronted
by one edge node; it emits flows drawn from held-out rows (a split federated training never
reads), benign devices normal rows only, compromised devices from ``start`` seconds on a
mix of one attack class (share ``attack_rate``) and normal rows.

An edge node scores its devices' flows in micro-batches and keeps, per device, a
:class:`Window` of the last ``window`` verdicts; when ``threshold`` of them say "attack"
the window raises an :class:`Alert` carrying the digest of the flows it saw
(:func:`window_digest`: the device, the row ids and verdicts), which an auditor recomputes
from the held-out rows and the committed model. :func:`run_edge` is that loop; what an
alert leads to (a signed transaction, a quarantine) is the caller's ``on_alert``.

Pure numpy: the model is the caller's ``classify(rows) -> attack verdicts`` function.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

WINDOW_TAG = b"bflsim/window/v1"


@dataclass(frozen=True)
class Device:
    """One IoT device: its id, the edge node in front of it, and how it behaves."""

    index: int
    edge_node: int
    compromised: bool = False
    attack_class: int | None = None  # the class index of its attack flows (compromised only)
    attack_rate: float = 0.0  # share of its flows that are attacks once compromised
    start: float = 0.0  # seconds into the traffic when the compromise begins


def assign_devices(
    num_nodes: int, devices_per_node: int, compromised: int, attack_class: int, attack_rate: float,
    start: float, rng: np.random.Generator,
) -> list[Device]:
    """``devices_per_node`` devices behind each of ``num_nodes`` edge nodes (device ``d`` behind
    node ``d // devices_per_node``), ``compromised`` of them drawn at random by ``rng``."""
    total = num_nodes * devices_per_node
    if not 0 <= compromised <= total:
        raise ValueError(f"compromised devices must be between 0 and {total}; got {compromised}")
    bad = set(rng.choice(total, size=compromised, replace=False).tolist()) if compromised else set()
    return [
        Device(d, d // devices_per_node, d in bad, attack_class if d in bad else None,
               attack_rate if d in bad else 0.0, start if d in bad else 0.0)
        for d in range(total)
    ]


@dataclass(frozen=True)
class Flows:
    """Flows in time order: when, from which device, which held-out row, and whether the
    device sent it as an attack (the ground truth the detector does not see)."""

    time: NDArray[np.float64]
    device: NDArray[np.int64]
    row: NDArray[np.int64]
    attack: NDArray[np.bool_]

    def __len__(self) -> int:
        return len(self.time)

    def take(self, mask: NDArray[np.bool_] | NDArray[np.int64]) -> Flows:
        return Flows(self.time[mask], self.device[mask], self.row[mask], self.attack[mask])

    @classmethod
    def concat(cls, parts: Sequence[Flows]) -> Flows:
        """The parts merged in time order (ties keep the parts' order)."""
        if not parts:
            return cls(np.zeros(0), np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, bool))
        time = np.concatenate([p.time for p in parts])
        order = np.argsort(time, kind="stable")
        return cls(time[order], np.concatenate([p.device for p in parts])[order],
                   np.concatenate([p.row for p in parts])[order], np.concatenate([p.attack for p in parts])[order])


def device_flows(
    device: Device, pools: Mapping[int, NDArray[np.int64]], normal_class: int, rate: float, duration: float,
    rng: np.random.Generator,
) -> Flows:
    """A device's flows over ``duration`` seconds: Poisson arrivals at ``rate`` flows per
    second; each flow a row drawn (with replacement) from ``pools[normal_class]``, or, for a
    compromised device from ``start`` on with probability ``attack_rate``, from
    ``pools[attack_class]``."""
    if rate <= 0 or duration <= 0:
        raise ValueError(f"device {device.index} has no traffic: rate {rate} flows/s over {duration} s")
    count = int(rng.poisson(rate * duration))
    time = np.sort(rng.uniform(0.0, duration, size=count))
    attack = np.zeros(count, dtype=bool)
    if device.compromised:
        attack = (time >= device.start) & (rng.random(count) < device.attack_rate)
    rows = np.empty(count, dtype=np.int64)
    for is_attack, cls in ((False, normal_class), (True, device.attack_class)):
        where = attack == is_attack
        if where.any():
            pool = pools.get(cls) if cls is not None else None
            if pool is None or len(pool) == 0:
                raise ValueError(f"device {device.index}: no held-out rows of class {cls} to draw flows from")
            rows[where] = rng.choice(pool, size=int(where.sum()))
    return Flows(time, np.full(count, device.index, dtype=np.int64), rows, attack)


def class_pools(labels: NDArray[np.integer]) -> dict[int, NDArray[np.int64]]:
    """Row ids of each class in ``labels`` (the held-out split's)."""
    labels = np.asarray(labels)
    return {int(c): np.flatnonzero(labels == c).astype(np.int64) for c in np.unique(labels)}


def window_digest(device: int, rows: Sequence[int], verdicts: Sequence[bool]) -> bytes:
    """sha256 of what a window saw: the device id, its flows' held-out row ids and the
    detector's verdicts, in arrival order (``bflsim/window/v1``)."""
    h = hashlib.sha256(WINDOW_TAG + b"\x00")
    h.update(int(device).to_bytes(8, "big"))
    h.update(len(rows).to_bytes(4, "big"))
    h.update(np.asarray(rows, dtype=">i8").tobytes())
    h.update(np.asarray(verdicts, dtype=np.uint8).tobytes())
    return h.digest()


@dataclass(frozen=True)
class Alert:
    """An edge node's claim that ``device`` is compromised: at ``time``, ``attacks`` of the
    last ``len(rows)`` flows were scored as attacks; ``digest`` is :func:`window_digest`."""

    time: float
    edge_node: int
    device: int
    rows: tuple[int, ...]
    verdicts: tuple[bool, ...]
    attacks: int
    digest: bytes


@dataclass
class Window:
    """A device's last ``size`` verdicts; it alerts when ``threshold`` of them are attacks,
    then starts again empty, so a second alert needs ``threshold`` new attack verdicts."""

    size: int
    threshold: int
    rows: deque = field(default_factory=deque)
    verdicts: deque = field(default_factory=deque)

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ValueError(f"window must be >= 1 flow; got {self.size}")
        if not 1 <= self.threshold <= self.size:
            raise ValueError(f"threshold must be between 1 and the window ({self.size}); got {self.threshold}: "
                             "a window can never hold more attack verdicts than flows")

    def add(self, row: int, verdict: bool) -> tuple[tuple[int, ...], tuple[bool, ...]] | None:
        """Add one flow's verdict; the full window (rows, verdicts) when it crosses the threshold."""
        self.rows.append(int(row))
        self.verdicts.append(bool(verdict))
        if len(self.rows) > self.size:
            self.rows.popleft()
            self.verdicts.popleft()
        if sum(self.verdicts) < self.threshold:
            return None
        seen = (tuple(self.rows), tuple(self.verdicts))
        self.rows.clear()
        self.verdicts.clear()
        return seen


@dataclass(frozen=True)
class EdgeOutcome:
    """What one edge node did with its devices' flows; ``windows`` and ``quarantined`` are
    where the next slice of its traffic carries on from."""

    alerts: list[Alert]
    scored: int  # flows scored
    dropped: int  # flows of quarantined devices, dropped unscored
    batches: int  # micro-batches scored (calls of ``classify``)
    verdicts: NDArray[np.bool_]  # per scored flow, in order: the detector said "attack"
    scored_flows: Flows  # the flows scored, in order
    windows: dict[int, Window]
    quarantined: frozenset[int]


def run_edge(
    edge_node: int, flows: Flows, classify: Callable[[NDArray[np.int64]], NDArray[np.bool_]], *,
    window: int, threshold: int, micro_batch: int,
    on_alert: Callable[[Alert], Iterable[int]] | None = None,
    windows: Mapping[int, Window] | None = None, quarantined: Iterable[int] = (),
) -> EdgeOutcome:
    """Score ``flows`` (one edge node's, in time order) ``micro_batch`` flows at a time.

    ``classify(rows)`` returns one attack verdict per held-out row. Each device's window is
    updated in arrival order; an alert is passed to ``on_alert``, which returns the devices
    quarantined from then on (e.g. by the registry's answer to the alert). A quarantined
    device's later flows are dropped without scoring, from the next flow on. ``windows``
    and ``quarantined`` carry on from an earlier slice of the same traffic (copied, not
    changed).
    """
    if micro_batch < 1:
        raise ValueError(f"micro_batch must be >= 1 flow; got {micro_batch}")
    windows = {d: Window(w.size, w.threshold, deque(w.rows), deque(w.verdicts)) for d, w in (windows or {}).items()}
    quarantined = set(quarantined)
    alerts: list[Alert] = []
    kept_index: list[NDArray[np.int64]] = []
    verdict_parts: list[NDArray[np.bool_]] = []
    dropped = batches = 0
    start = 0
    while start < len(flows):
        batch = np.arange(start, min(start + micro_batch, len(flows)))
        start = batch[-1] + 1
        live = batch[~np.isin(flows.device[batch], list(quarantined))] if quarantined else batch
        dropped += len(batch) - len(live)
        if not len(live):
            continue
        verdicts = np.asarray(classify(flows.row[live]), dtype=bool)
        if verdicts.shape != (len(live),):
            raise ValueError(f"classify returned {verdicts.shape} verdicts for {len(live)} flows")
        batches += 1
        keep = np.ones(len(live), dtype=bool)
        for k, i in enumerate(live):
            device = int(flows.device[i])
            if device in quarantined:  # quarantined by an alert earlier in this batch
                keep[k] = False
                dropped += 1
                continue
            seen = windows.setdefault(device, Window(window, threshold)).add(int(flows.row[i]), bool(verdicts[k]))
            if seen is not None:
                alert = Alert(float(flows.time[i]), edge_node, device, seen[0], seen[1], sum(seen[1]),
                              window_digest(device, *seen))
                alerts.append(alert)
                if on_alert is not None:
                    quarantined.update(int(d) for d in on_alert(alert))
        kept_index.append(live[keep])
        verdict_parts.append(verdicts[keep])
    index = np.concatenate(kept_index) if kept_index else np.zeros(0, np.int64)
    verdicts_all = np.concatenate(verdict_parts) if verdict_parts else np.zeros(0, bool)
    return EdgeOutcome(alerts, len(index), dropped, batches, verdicts_all, flows.take(index), windows,
                       frozenset(quarantined))
