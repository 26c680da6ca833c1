"""Learned weights of a video-classifier ensemble (HACS-2020 sec. 2.1)."""
from __future__ import annotations

import numpy as np
import pytest

from tadkit.detect.classifier_ensemble import ensemble_scores, fit_ensemble_weights, probabilities_to_logits

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _members(seed=0, v=300, k=6):
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, k, v)
    labels = np.eye(k)[truth]
    good = 3.0 * labels + rng.normal(size=(v, k))                  # informative logits
    noise = 3.0 * rng.normal(size=(v, k))                           # uninformative, same scale
    return truth, labels, good, noise


def test_weights_favour_the_informative_member_and_beat_the_mean():
    truth, labels, good, noise = _members()
    w = fit_ensemble_weights([good, noise], labels)
    assert w[0] > 0.5 and abs(w[1]) < 0.2 * w[0]
    fitted = ensemble_scores([good, noise], w).argmax(1)
    mean = ensemble_scores([good, noise], [0.5, 0.5]).argmax(1)
    assert (fitted == truth).mean() > (mean == truth).mean() + 0.05
    assert (fitted == truth).mean() >= (good.argmax(1) == truth).mean() - 0.01


def test_ensemble_scores_are_a_softmax_of_the_weighted_logits():
    a = np.array([[1.0, 0.0, -1.0]])
    b = np.array([[0.0, 2.0, 0.0]])
    got = ensemble_scores([a, b], [2.0, 0.5])
    z = np.array([2.0, 1.0, -2.0])
    np.testing.assert_allclose(got[0], np.exp(z) / np.exp(z).sum())
    np.testing.assert_allclose(probabilities_to_logits(np.array([0.5, 0.75])), [0.0, np.log(3.0)])


def test_videos_without_labels_are_ignored_and_shapes_checked():
    truth, labels, good, noise = _members(v=40)
    np.testing.assert_array_equal(fit_ensemble_weights([good, noise], np.zeros_like(labels)), [0.5, 0.5])
    with pytest.raises(ValueError, match="do not match"):
        fit_ensemble_weights([good, noise], labels[:10])
