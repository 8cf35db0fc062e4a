"""TensorBoard event files beside the tidy rows: ``--tensorboard DIR``.

Every metric row that has a step (a federated round, or a training epoch) and belongs to no
single node or class is also written as a TensorBoard scalar, as it is logged: tag
``<split>/<metric>`` (``<model>/<split>/<metric>`` when a run trains several models), step
the round or epoch. ``tensorboard --logdir DIR`` then shows every run under DIR, one run per
folder ``DIR/<experiment>/<point>`` (``DIR/<run id>`` for a single run). The CSV stays the
record; the events are a view of it, written with TensorFlow's own ``tf.summary`` (already a
dependency).

The folder comes from ``--tensorboard`` (:func:`set_root`) or ``$BFLSIM_TENSORBOARD``, so a
run started by ``flwr run`` writes events when the SuperLink was started with it set.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ENV = "BFLSIM_TENSORBOARD"


def set_root(path: str | Path | None) -> None:
    """Write every run's scalars under ``path`` from now on (None: stop)."""
    if path is None:
        os.environ.pop(ENV, None)
    else:
        os.environ[ENV] = str(Path(path).resolve())


def root() -> Path | None:
    """Where runs write their scalars, if anywhere."""
    value = os.environ.get(ENV)
    return Path(value) if value else None


class ScalarSink:
    """One run's TensorBoard writer, opened at its first scalar. Its run folder calls it under
    the folder's own lock (:meth:`bflsim.runfolder.RunFolder.log`, ``finish``)."""

    def __init__(self, logdir: Path, several_models: bool) -> None:
        self.logdir, self.several_models = logdir, several_models
        self._writer: Any = None

    def write(self, rows: Sequence[tuple]) -> None:
        """Rows as :data:`bflsim.runfolder.METRIC_COLUMNS`; those with a step, no node, no class."""
        scalars = [(self._tag(model, split, name), int(rnd if rnd != "" else epoch), value)
                   for _, model, split, rnd, epoch, node, class_name, name, value in rows
                   if node == "" and class_name == "" and (rnd != "" or epoch != "")]
        if not scalars:
            return
        import tensorflow as tf

        if self._writer is None:
            self.logdir.mkdir(parents=True, exist_ok=True)
            self._writer = tf.summary.create_file_writer(str(self.logdir))
        with self._writer.as_default():
            for tag, step, value in scalars:
                tf.summary.scalar(tag, value, step=step)
        self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def _tag(self, model: str, split: str, name: str) -> str:
        return "/".join(part for part in ((model if self.several_models else ""), split, name) if part)
