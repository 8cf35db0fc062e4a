"""Intrusion-detection models: the paper's CNN-LSTM, a DNN, and scikit-learn baselines.

The hybrid detector follows the seed paper: a 1-D convolution (ReLU) over the feature
vector read as a sequence, max-pooling, an LSTM over the pooled sequence, and a softmax
layer, trained with categorical cross-entropy (integer labels, so the sparse form).

Every model is one :class:`Model` record in :data:`MODELS`, an explicit registry from the
name used in experiment files; Keras and scikit-learn models share the small
:class:`Classifier` interface so the runner never asks which kind it holds. A federated run
keeps one Keras model per process and architecture (:func:`cached_model`), with one local
training epoch and one forward pass compiled as TensorFlow graphs, traced once and reused by
every node, round and sweep point the process serves (:func:`train_weights`, :func:`predict`).
"""

from __future__ import annotations

import itertools
import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from bflsim.config import ModelsConfig, TrainConfig, to_dict
from bflsim.progress import verbose
from bflsim.vectors import Weights

EpochCallback = Callable[[int, dict[str, float]], None]


class Classifier(Protocol):
    """What the runner needs from a model."""

    name: str

    def fit(
        self,
        x: NDArray[np.float32],
        y: NDArray[np.int64],
        x_val: NDArray[np.float32] | None = None,
        y_val: NDArray[np.int64] | None = None,
        on_epoch: EpochCallback | None = None,
    ) -> None: ...

    def predict_proba(self, x: NDArray[np.float32]) -> NDArray[np.float32]: ...


def configure_tensorflow(intra_op_threads: int | None = None, inter_op_threads: int | None = None, *,
                         load: bool = True) -> None:
    """Size TensorFlow's thread pools and quiet its logs, before it is imported; then, with
    ``load``, import it (:func:`import_tensorflow_quietly`)."""
    _tensorflow_environment()
    if intra_op_threads is not None:
        os.environ["TF_NUM_INTRAOP_THREADS"] = str(intra_op_threads)
    if inter_op_threads is not None:
        os.environ["TF_NUM_INTEROP_THREADS"] = str(inter_op_threads)
    if load:
        import_tensorflow_quietly()


def import_tensorflow_quietly() -> None:
    """Import TensorFlow (and Keras) with its start-up lines silenced, unless ``--verbose``.

    TensorFlow 2.21 writes its start-up lines (absl's "All log messages before
    absl::InitializeLog()", oneDNN, CPU features) from C++ to file descriptor 2 while its
    libraries load, whatever ``TF_CPP_MIN_LOG_LEVEL`` says, so the first import runs with
    descriptor 2 pointed at /dev/null; an import error still raises once it is restored.
    A process that joins a Ray cluster imports TensorFlow only after ``ray.init`` (as Flower
    does): importing it first once left Ray's GCS client waiting for ever.
    """
    if "tensorflow" in sys.modules:
        return
    _tensorflow_environment()
    if verbose():
        return
    with _stderr_silenced():
        import keras  # noqa: F401  (loads TensorFlow and its libraries)
        import tensorflow  # noqa: F401


def _tensorflow_environment() -> None:
    """TensorFlow's C++ logs at warnings and up, Keras on TensorFlow (a user's own setting kept)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")


@contextmanager
def _stderr_silenced() -> Iterator[None]:
    """File descriptor 2 to /dev/null for the length of the block (C++ writes included)."""
    sys.stderr.flush()
    saved, sink = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(sink, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(sink)


def _glorot(seed: int, layer: int) -> Any:
    import keras

    return keras.initializers.GlorotUniform(seed=seed * 101 + layer)


def build_cnn_lstm(
    num_features: int, num_classes: int, models: ModelsConfig, learning_rate: float, seed: int = 0
) -> Any:
    """Conv1D(ReLU) -> MaxPool1D -> LSTM -> Dense(softmax), compiled with Adam.

    Initial weights depend on ``seed`` alone (every initializer is seeded), so a
    federated run starts every scenario from the same global model.
    """
    configure_tensorflow()
    import keras

    cfg = models.cnn_lstm
    layers = [
        keras.Input(shape=(num_features,), name="features"),
        keras.layers.Reshape((num_features, 1)),
        keras.layers.Conv1D(
            cfg.conv_filters, cfg.kernel_size, activation="relu", padding="same",
            kernel_initializer=_glorot(seed, 1),
        ),
        keras.layers.MaxPooling1D(cfg.pool_size),
        keras.layers.LSTM(
            cfg.lstm_units, kernel_initializer=_glorot(seed, 2),
            recurrent_initializer=keras.initializers.Orthogonal(seed=seed * 101 + 3),
        ),
    ]
    if cfg.dropout > 0:
        layers.append(keras.layers.Dropout(cfg.dropout, seed=seed))
    layers.append(keras.layers.Dense(num_classes, activation="softmax", kernel_initializer=_glorot(seed, 4)))
    model = keras.Sequential(layers, name="cnn_lstm")
    _compile(model, learning_rate)
    return model


def build_dnn(
    num_features: int, num_classes: int, models: ModelsConfig, learning_rate: float, seed: int = 0
) -> Any:
    """Fully connected ReLU layers -> Dense(softmax), compiled with Adam; seeded like the CNN-LSTM."""
    configure_tensorflow()
    import keras

    cfg = models.dnn
    layers: list[Any] = [keras.Input(shape=(num_features,), name="features")]
    for i, units in enumerate(cfg.hidden_units, start=1):
        layers.append(keras.layers.Dense(units, activation="relu", kernel_initializer=_glorot(seed, i)))
        if cfg.dropout > 0:
            layers.append(keras.layers.Dropout(cfg.dropout, seed=seed + i))
    layers.append(keras.layers.Dense(num_classes, activation="softmax", kernel_initializer=_glorot(seed, 99)))
    model = keras.Sequential(layers, name="dnn")
    _compile(model, learning_rate)
    return model


def _compile(model: Any, learning_rate: float) -> None:
    import keras

    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )


@dataclass
class KerasClassifier:
    """A compiled Keras model trained with ``fit`` for ``train.epochs`` epochs."""

    name: str
    model: Any
    train: TrainConfig
    history: dict[str, list[float]] = field(default_factory=dict)

    def fit(self, x, y, x_val=None, y_val=None, on_epoch=None) -> None:
        callbacks = [_EpochHook(on_epoch)] if on_epoch else []
        validation = (x_val, y_val) if x_val is not None and len(x_val) else None
        result = self.model.fit(
            x,
            y,
            epochs=self.train.epochs,
            batch_size=self.train.batch_size,
            validation_data=validation,
            shuffle=True,
            verbose=0,
            callbacks=callbacks,
        )
        self.history = {k: [float(v) for v in vals] for k, vals in result.history.items()}

    def predict_proba(self, x):
        return self.model.predict(x, batch_size=max(self.train.batch_size, 1024), verbose=0)


class _EpochHook:
    """Adapts a plain ``on_epoch(epoch, logs)`` function to a Keras callback."""

    def __new__(cls, on_epoch: EpochCallback):
        import keras

        class Hook(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                on_epoch(epoch + 1, {k: float(v) for k, v in (logs or {}).items()})

        return Hook()


@dataclass
class SklearnClassifier:
    """A scikit-learn estimator behind the :class:`Classifier` interface."""

    name: str
    estimator: Any
    num_classes: int

    def fit(self, x, y, x_val=None, y_val=None, on_epoch=None) -> None:
        self.estimator.fit(x, y)

    def predict_proba(self, x):
        if hasattr(self.estimator, "predict_proba"):
            proba = self.estimator.predict_proba(x)
            full = np.zeros((len(x), self.num_classes), dtype=np.float32)
            full[:, self.estimator.classes_] = proba
            return full
        # Linear SVM: one-hot of the decision, since it has no calibrated probabilities.
        pred = self.estimator.predict(x)
        return np.eye(self.num_classes, dtype=np.float32)[pred]


def _decision_tree(seed: int) -> Any:
    from sklearn.tree import DecisionTreeClassifier

    return DecisionTreeClassifier(random_state=seed)


def _random_forest(seed: int) -> Any:
    from sklearn.ensemble import RandomForestClassifier

    return RandomForestClassifier(n_estimators=100, n_jobs=-1, random_state=seed)


def _linear_svm(seed: int) -> Any:
    from sklearn.svm import LinearSVC

    return LinearSVC(C=1.0, max_iter=5000, random_state=seed)


def dnn_macs(num_features: int, num_classes: int, models: ModelsConfig) -> int:
    """Multiply-adds of one row's forward pass through the DNN."""
    sizes = [num_features, *models.dnn.hidden_units, num_classes]
    return sum(a * b for a, b in itertools.pairwise(sizes))


def cnn_lstm_macs(num_features: int, num_classes: int, models: ModelsConfig) -> int:
    """Multiply-adds of one row's forward pass through the CNN-LSTM (convolution, every LSTM
    step's four gates, the softmax layer)."""
    cfg = models.cnn_lstm
    steps = num_features // cfg.pool_size
    return (num_features * cfg.conv_filters * cfg.kernel_size
            + steps * 4 * cfg.lstm_units * (cfg.conv_filters + cfg.lstm_units)
            + cfg.lstm_units * num_classes)


def training_flops(models: ModelsConfig, num_features: int, num_classes: int, rows: int) -> float:
    """Rough arithmetic of training the federated model on ``rows`` rows once: 2 flops per
    multiply-add, times 3 for the forward and backward passes."""
    macs = MODELS[models.names[0]].macs
    return 0.0 if macs is None else 6.0 * macs(num_features, num_classes, models) * rows


@dataclass(frozen=True)
class Model:
    """One detector of the registry: its name in experiment files, its label, how to build it.

    ``federated`` models are Keras networks whose weights a federated round can set, train
    and return (``build(num_features, num_classes, models, learning_rate, seed=...)`` gives a
    compiled Keras model); the others are scikit-learn estimators (``build(seed)``).
    """

    name: str
    label: str
    build: Callable[..., Any]
    federated: bool
    reference: str = ""
    macs: Callable[[int, int, ModelsConfig], int] | None = None  # one row's forward pass (federated models)


CNN_LSTM = Model("cnn_lstm", "CNN-LSTM", build_cnn_lstm, federated=True,
                 reference="the reference paper's hybrid: Conv1D -> MaxPool -> LSTM -> softmax", macs=cnn_lstm_macs)
DNN = Model("dnn", "DNN", build_dnn, federated=True, macs=dnn_macs)
DECISION_TREE = Model("decision_tree", "Decision tree", _decision_tree, federated=False)
RANDOM_FOREST = Model("random_forest", "Random forest", _random_forest, federated=False)
LINEAR_SVM = Model("linear_svm", "Linear SVM", _linear_svm, federated=False)

MODELS: dict[str, Model] = {m.name: m for m in (DECISION_TREE, RANDOM_FOREST, LINEAR_SVM, DNN, CNN_LSTM)}
"""Every model by the name experiment files use (``models.names``), in the order of Table 3."""


def make_classifier(
    name: str, num_features: int, num_classes: int, models: ModelsConfig, train: TrainConfig
) -> Classifier:
    """Build the named model, seeded from ``train.seed``."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; expected one of {list(MODELS)}")
    record = MODELS[name]
    if record.federated:
        configure_tensorflow()
        import keras

        keras.utils.set_random_seed(train.seed)
        model = record.build(num_features, num_classes, models, train.learning_rate, seed=train.seed)
        return KerasClassifier(name, model, train)
    return SklearnClassifier(name, record.build(train.seed), num_classes)


# --- the federated model, one per process ---------------------------------------------------


@dataclass
class _Compiled:
    """A cached Keras model and its compiled loops (traced once); ``load`` restores the
    optimizer state it had when built."""

    model: Any
    epoch: Any  # tf.function(x, y, order, batch_size) -> mean loss over the epoch
    forward: Any  # tf.function(x) -> class probabilities
    load: Any  # tf.function(weights) -> None: set the weights and a fresh optimizer state


_CACHE: dict[str, _Compiled] = {}


def _cached(models: ModelsConfig, train: TrainConfig, num_features: int, num_classes: int) -> _Compiled:
    key = json.dumps([models.names[0], to_dict(models), num_features, num_classes, train.learning_rate],
                     sort_keys=True)
    if key not in _CACHE:
        configure_tensorflow()
        model = MODELS[models.names[0]].build(num_features, num_classes, models, train.learning_rate, seed=train.seed)
        model.optimizer.build(model.trainable_variables)
        fresh_state = [np.array(v.numpy()) for v in model.optimizer.variables]
        _CACHE[key] = _Compiled(model, *_compile_loops(model), _compile_load(model, fresh_state))
    return _CACHE[key]


def _compile_loops(model: Any) -> tuple[Any, Any]:
    """One training epoch and one forward pass as ``tf.function`` graphs, traced once per model.

    The epoch is what Keras ``fit`` does for one epoch (mini-batches in the given order,
    sparse categorical cross-entropy averaged over each batch, one Adam step per batch; the
    reported loss is the mean over the epoch's rows, as ``fit``'s history), without ``fit``'s
    per-call set-up (data adapter, callbacks, a new iterator and step function): 134 ms per
    call for one node's 440 rows with the sweep's DNN, against 2.6 ms for this loop.
    Shapes are left open, so every node, round and sweep point reuses the same trace.
    """
    import keras
    import tensorflow as tf

    loss_fn = keras.losses.SparseCategoricalCrossentropy()
    optimizer, variables = model.optimizer, model.trainable_variables

    @tf.function(input_signature=[
        tf.TensorSpec([None, None], tf.float32), tf.TensorSpec([None], tf.int64),
        tf.TensorSpec([None], tf.int32), tf.TensorSpec([], tf.int32),
    ])
    def epoch(x, y, order, batch_size):
        rows = tf.shape(order)[0]
        total = tf.constant(0.0, tf.float32)
        for start in tf.range(0, rows, batch_size):
            batch = order[start:start + batch_size]
            with tf.GradientTape() as tape:
                loss = loss_fn(tf.gather(y, batch), model(tf.gather(x, batch), training=True))
            optimizer.apply(tape.gradient(loss, variables), variables)
            total += loss * tf.cast(tf.shape(batch)[0], tf.float32)
        return total / tf.cast(rows, tf.float32)

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.float32)])
    def forward(x):
        return model(x, training=False)

    return epoch, forward


def _compile_load(model: Any, fresh_state: list[np.ndarray]) -> Any:
    """Setting the weights and restoring the fresh optimizer state as one graph call (eager
    ``set_weights`` plus one ``assign`` per optimizer variable cost 2.7 ms per local round
    of the sweep's DNN, as much as its training)."""
    import tensorflow as tf

    weights, state = list(model.weights), list(model.optimizer.variables)
    fresh = [tf.constant(value) for value in fresh_state]

    @tf.function(input_signature=[[tf.TensorSpec(w.shape, w.dtype) for w in weights]])
    def load(values):
        for variable, value in zip(weights, values, strict=True):
            variable.assign(value)
        for variable, value in zip(state, fresh, strict=True):
            variable.assign(value)

    return load


def cached_model(models: ModelsConfig, train: TrainConfig, num_features: int, num_classes: int) -> Any:
    """The compiled Keras model of ``models.names[0]`` for this shape, built once per process.

    Building and tracing a Keras model costs seconds; edge nodes and the server's evaluator
    reuse one per architecture; :func:`train_weights` sets its weights and a fresh optimizer
    state per call.
    """
    return _cached(models, train, num_features, num_classes).model


def train_weights(
    models: ModelsConfig, train: TrainConfig, weights: Weights, x: NDArray[np.float32], y: NDArray[np.int64],
    num_classes: int, epochs: int, seed: int,
) -> tuple[Weights, float]:
    """Train the cached model from ``weights`` on ``(x, y)`` for ``epochs`` epochs; the new weights
    and the last epoch's mean loss.

    A fresh optimizer (as every local round starts), dropout restarted from ``seed``
    (:func:`reseed_layers`) and the rows shuffled every epoch by a generator seeded with
    ``seed``: the same call gives the same weights, whatever the process ran before.
    """
    cached = _cached(models, train, x.shape[1], num_classes)
    cached.load([np.asarray(w, dtype=np.float32) for w in weights])
    reseed_layers(cached.model, seed)
    rng = np.random.default_rng(seed)
    features, labels = np.asarray(x, dtype=np.float32), np.asarray(y, dtype=np.int64)
    loss = float("nan")
    for _ in range(epochs):
        order = rng.permutation(len(labels)).astype(np.int32)
        loss = float(cached.epoch(features, labels, order, np.int32(train.batch_size)))
    return [np.asarray(w, dtype=np.float32) for w in cached.model.get_weights()], loss


def predict(
    models: ModelsConfig, train: TrainConfig, weights: Weights, x: NDArray[np.float32], num_classes: int,
    batch_size: int = 4096,
) -> NDArray[np.float32]:
    """Class probabilities of the cached model with ``weights`` on ``x`` (inference, no dropout)."""
    cached = _cached(models, train, x.shape[1], num_classes)
    cached.model.set_weights(weights)
    features = np.asarray(x, dtype=np.float32)
    parts = [cached.forward(features[i:i + batch_size]).numpy() for i in range(0, len(features), batch_size)]
    return np.concatenate(parts) if parts else np.zeros((0, num_classes), dtype=np.float32)


def detector(
    models: ModelsConfig, train: TrainConfig, weights: Weights, num_features: int, num_classes: int,
) -> Callable[[NDArray[np.float32]], NDArray[np.float32]]:
    """An edge node's detector: the cached model with ``weights`` set once, and a function from
    a micro-batch of flows (rows of features) to their class probabilities. The weights stay
    until the process's cached model of this shape is given others (:func:`predict`,
    :func:`train_weights`), so keep one detector in use at a time."""
    cached = _cached(models, train, num_features, num_classes)
    cached.model.set_weights([np.asarray(w, dtype=np.float32) for w in weights])

    def classify(x: NDArray[np.float32]) -> NDArray[np.float32]:
        return cached.forward(np.asarray(x, dtype=np.float32)).numpy()

    return classify


def reseed_layers(model: Any, seed: int) -> None:
    """Restart every seeded layer's random stream (Keras ``SeedGenerator``: dropout) from ``seed``.

    A seed generator's counter advances with every call and lives in the layer, so a cached
    model's dropout masks would otherwise depend on what the process trained before (which
    node a Ray actor happened to run): a run would not reproduce, nor would a resumed one.
    Layer ``i`` restarts from ``(seed + 7919 * i) mod 2**31``, counter 0.
    """
    for position, layer in enumerate(model.layers):
        generator = getattr(layer, "seed_generator", None)
        if generator is not None:
            state = generator.state
            start = (seed + 7919 * position) % 2**31
            state.assign(np.array([start, 0], dtype=state.dtype))


def initial_weights(models: ModelsConfig, train: TrainConfig, num_features: int, num_classes: int) -> Weights:
    """The global model before round 1: a function of ``train.seed`` alone."""
    configure_tensorflow()
    fresh = MODELS[models.names[0]].build(num_features, num_classes, models, train.learning_rate, seed=train.seed)
    return [np.asarray(w, dtype=np.float32) for w in fresh.get_weights()]
