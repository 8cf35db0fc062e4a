"""Model builders: the paper's CNN-LSTM layout, the registry, and a learnable toy problem."""

import numpy as np
import pytest

from bflsim.config import CnnLstmConfig, ModelsConfig, TrainConfig
from bflsim.models import MODELS, make_classifier


def test_cnn_lstm_has_the_papers_layer_order_and_shapes():
    models = ModelsConfig(cnn_lstm=CnnLstmConfig(conv_filters=8, kernel_size=3, pool_size=2, lstm_units=4))

    clf = make_classifier("cnn_lstm", num_features=10, num_classes=3, models=models, train=TrainConfig())
    kinds = [type(layer).__name__ for layer in clf.model.layers]
    proba = clf.predict_proba(np.zeros((2, 10), dtype=np.float32))

    assert kinds == ["Reshape", "Conv1D", "MaxPooling1D", "LSTM", "Dense"]
    assert clf.model.layers[1].output.shape == (None, 10, 8)
    assert clf.model.layers[2].output.shape == (None, 5, 8)
    assert proba.shape == (2, 3)
    assert np.allclose(proba.sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_learns_a_separable_problem(name):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 600)
    x = (rng.normal(size=(600, 6)) * 0.3 + y[:, None]).astype(np.float32)
    models = ModelsConfig(cnn_lstm=CnnLstmConfig(conv_filters=8, lstm_units=8))
    clf = make_classifier(name, 6, 3, models, TrainConfig(epochs=15, batch_size=32, learning_rate=0.01, seed=1))
    epochs_seen = []

    clf.fit(x[:500], y[:500], x[500:], y[500:], on_epoch=lambda epoch, logs: epochs_seen.append(epoch))
    accuracy = (clf.predict_proba(x[500:]).argmax(axis=1) == y[500:]).mean()

    assert accuracy > 0.9
    if name in ("cnn_lstm", "dnn"):
        assert epochs_seen == list(range(1, 16))


def test_unknown_model_is_refused():
    with pytest.raises(ValueError, match="unknown model 'cnn'"):
        make_classifier("cnn", 4, 2, ModelsConfig(), TrainConfig())
