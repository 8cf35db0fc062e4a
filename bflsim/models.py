"""Intrusion-detection models: the paper's CNN-LSTM, a DNN, and scikit-learn baselines.

The hybrid detector follows the seed paper: a 1-D convolution (ReLU) over the feature
vector read as a sequence, max-pooling, an LSTM over the pooled sequence, and a softmax
layer, trained with categorical cross-entropy (integer labels, so the sparse form).

Every model is one :class:`Model` record in :data:`MODELS`, an explicit registry from the
name used in experiment files; Keras and scikit-learn models share the small
:class:`Classifier` interface so the runner never asks which kind it holds. A federated run
keeps one compiled Keras model per process (:func:`cached_model`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from bflsim.config import ModelsConfig, TrainConfig, to_dict
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


def configure_tensorflow(intra_op_threads: int | None = None, inter_op_threads: int | None = None) -> None:
    """Quiet TensorFlow's start-up logs and size its thread pools before it is imported."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    if intra_op_threads is not None:
        os.environ["TF_NUM_INTRAOP_THREADS"] = str(intra_op_threads)
    if inter_op_threads is not None:
        os.environ["TF_NUM_INTEROP_THREADS"] = str(inter_op_threads)


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


CNN_LSTM = Model("cnn_lstm", "CNN-LSTM", build_cnn_lstm, federated=True,
                 reference="the reference paper's hybrid: Conv1D -> MaxPool -> LSTM -> softmax")
DNN = Model("dnn", "DNN", build_dnn, federated=True)
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

_CACHE: dict[str, tuple[Any, list[np.ndarray]]] = {}


def _cached(models: ModelsConfig, train: TrainConfig, num_features: int, num_classes: int) -> tuple[Any, list]:
    key = json.dumps([models.names[0], to_dict(models), num_features, num_classes, train.learning_rate],
                     sort_keys=True)
    if key not in _CACHE:
        configure_tensorflow()
        model = MODELS[models.names[0]].build(num_features, num_classes, models, train.learning_rate, seed=train.seed)
        model.optimizer.build(model.trainable_variables)
        fresh_state = [np.array(v.numpy()) for v in model.optimizer.variables]
        _CACHE[key] = (model, fresh_state)
    return _CACHE[key]


def cached_model(models: ModelsConfig, train: TrainConfig, num_features: int, num_classes: int) -> Any:
    """The compiled Keras model of ``models.names[0]`` for this shape, built once per process.

    Building and tracing a Keras model costs seconds; edge nodes and the server's evaluator
    reuse one per architecture and set its weights (and :func:`reset_optimizer`) per call.
    """
    return _cached(models, train, num_features, num_classes)[0]


def reset_optimizer(models: ModelsConfig, train: TrainConfig, num_features: int, num_classes: int) -> None:
    """Restore the cached model's fresh optimizer state (step count, moments): each round starts afresh."""
    model, fresh_state = _cached(models, train, num_features, num_classes)
    for variable, value in zip(model.optimizer.variables, fresh_state, strict=True):
        variable.assign(value)


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
