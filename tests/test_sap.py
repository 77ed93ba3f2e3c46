"""SAP's gradient (anp/evaluation/sap.py): the full gradient through p and the scales, the stopped one.

One sample of SAP is out_j = m_j h_j / (1 - (1 - p_j)^r), p = |h| / sum |h|, with the kept
mask m fixed by the seed. The full gradient must be the derivative of that function of h
(checked against central differences where m does not change); the stopped one treats p and
the scales as constants, as `sap` did before the full gradient.
"""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from anp.evaluation import sap
from anp.config import Config
from anp.errors import UserError
from models.lenet import LeNet5
from tests.helpers import REPO, SHARED_DATA, have_real_data, results_script


def old_sap(h, frac=1.0, seed=None):
  """`sap` with the gradient stopped through p and the scale: the formula before
  `differentiable` existed, kept verbatim as the reference, given the same draw."""
  shape = tf.shape(h)
  n = math.prod(h.shape[1:])
  flat = tf.reshape(h, [shape[0], n])
  r = max(1, math.ceil(frac * n))
  mag = tf.abs(tf.stop_gradient(flat))
  total = tf.reduce_sum(mag, axis=1, keepdims=True)
  p = mag / tf.maximum(total, 1e-30)
  hits = sap.drawn(p, r, seed)
  keep_prob = -tf.math.expm1(r * tf.math.log1p(-tf.minimum(p, 1.0 - 1e-7)))
  scale = tf.where(hits, 1.0 / tf.maximum(keep_prob, 1e-30), 0.0)
  scale = tf.where(total > 0, scale, 1.0)
  return tf.reshape(flat * tf.stop_gradient(scale), shape)


def kept_sets(p, r, rows, seed):
  """The kept masks of `rows` draws from the one categorical p, as a [rows, n] bool array."""
  return sap.drawn(tf.tile(tf.constant([p], tf.float32), [rows, 1]), r, seed).numpy()


def test_drawn_gives_the_exact_distribution_of_the_kept_set():
  # n = 3 units, r = 2 draws: P({j}) = p_j^2 and P({i, j}) = 2 p_i p_j.
  p = np.array([0.5, 0.3, 0.2])
  kept = kept_sets(p, 2, 40000, [1, 2])
  sets = {(0,): p[0] ** 2, (1,): p[1] ** 2, (2,): p[2] ** 2, (0, 1): 2 * p[0] * p[1],
          (0, 2): 2 * p[0] * p[2], (1, 2): 2 * p[1] * p[2]}
  counts = {s: 0 for s in sets}
  for row in kept:
    counts[tuple(np.flatnonzero(row))] += 1  # a key error: an impossible set
  chi2 = sum((counts[s] - len(kept) * q) ** 2 / (len(kept) * q) for s, q in sets.items())
  assert chi2 < 20.5, (chi2, counts)  # chi-square, 5 degrees of freedom: P(> 20.5) = 0.001


def test_drawn_marginals_and_dependence_match_draws_with_replacement():
  rng = np.random.default_rng(0)
  p = rng.exponential(size=40) * (rng.uniform(size=40) > 0.2)  # some units of p = 0
  p /= p.sum()
  r, rows = 40, 20000
  kept = kept_sets(p, r, rows, [3, 4])
  q = 1 - (1 - p) ** r  # P(unit j drawn)
  assert not np.any(kept[:, p == 0])
  np.testing.assert_array_less(np.abs(kept.mean(0) - q), 5 * np.sqrt(q * (1 - q) / rows) + 1e-9)
  # The number of distinct units: its variance has the negative covariances of draws with
  # replacement, Cov(i, j) = (1 - p_i - p_j)^r - (1 - p_i)^r (1 - p_j)^r, which independent
  # per-unit coins (the same marginals) would not have.
  both_missed = np.clip(1 - p[:, None] - p[None, :], 0, None) ** r
  cov = both_missed - np.outer(1 - q, 1 - q)
  np.fill_diagonal(cov, q * (1 - q))
  distinct = kept.sum(1)
  assert abs(distinct.mean() - q.sum()) < 5 * np.sqrt(cov.sum() / rows)
  assert abs(distinct.var() / cov.sum() - 1) < 0.06, (distinct.var(), cov.sum(), q @ (1 - q))
  assert cov.sum() < 0.8 * (q @ (1 - q))  # the check can tell the two apart


def test_drawn_is_seeded_and_draws_nothing_from_a_zero_row():
  p = tf.constant([[0.25, 0.25, 0.5, 0.0], [0.0] * 4])
  first = sap.drawn(p, 3, [5, 6]).numpy()
  np.testing.assert_array_equal(sap.drawn(p, 3, [5, 6]).numpy(), first)
  assert not np.any(first[1]) and not first[0, 3] and 1 <= first[0].sum() <= 3
  samples = np.stack([sap.drawn(p, 3).numpy() for _ in range(20)])
  assert len({s.tobytes() for s in samples}) > 1  # unseeded: new draws


def activations(shape, seed):
  h = tf.nn.relu(tf.random.stateless_normal(shape, [seed, 7]))
  h = tf.tensor_scatter_nd_update(h, [[1]], tf.zeros([1] + shape[1:]))  # an all-zero row
  one = tf.reshape(tf.one_hot(3, math.prod(shape[1:])), [1] + shape[1:])
  return tf.tensor_scatter_nd_update(h, [[2]], 2.5 * one)  # one unit: p = 1 is clamped


@pytest.mark.parametrize("shape,frac", [([4, 3, 3, 5], 1.0), ([4, 3, 3, 5], 0.3),
                                        ([5, 40], 0.5), ([5, 40], 0.01)])
def test_forward_is_bit_for_bit_the_formula(shape, frac):
  h = activations(shape, seed=len(shape))
  for i in range(5):
    ref = old_sap(h, frac, seed=[i, 3]).numpy()
    for differentiable in (True, False):
      np.testing.assert_array_equal(sap.sap(h, frac, [i, 3], differentiable).numpy(), ref)
    assert np.all(ref[1] == 0) and np.any(ref[0] == 0) and np.any(ref[0] != 0)
  tf.random.set_seed(11)  # the stateful draw too: the same global seed, the same sample
  ref = old_sap(h, frac).numpy()
  tf.random.set_seed(11)
  np.testing.assert_array_equal(sap.sap(h, frac).numpy(), ref)


# A tiny model: x [B, 6] -> relu(x W1) [B, 12] -> SAP (one fixed sample) -> . W2 -> <., c>.
def tiny_model(dtype, seed=(5, 1), frac=0.5, sampler=None, **kw):
  w1 = tf.cast(tf.random.stateless_normal([6, 12], [1, 1]), dtype)
  w2 = tf.cast(tf.random.stateless_normal([12, 3], [2, 1]), dtype)
  c = tf.cast(tf.random.stateless_normal([3], [3, 1]), dtype)
  sampler = sampler or sap.sap

  def features(x):
    return sampler(tf.nn.relu(x @ w1), frac, list(seed), **kw)

  def loss(x):
    return tf.reduce_sum(features(x) @ w2 * c)
  return features, loss


def grad(loss, x):
  with tf.GradientTape() as tape:
    tape.watch(x)
    value = loss(x)
  return tape.gradient(value, x).numpy()


def inputs(dtype):
  x = tf.random.stateless_normal([3, 6], [4, 4], dtype=dtype)
  return tf.tensor_scatter_nd_update(x, [[2]], tf.zeros([1, 6], dtype))  # h = 0: all-zero row


def test_full_gradient_is_finite_differs_from_stopped_and_matches_finite_differences():
  x = inputs(tf.float64)
  features, loss = tiny_model(tf.float64)
  full = grad(loss, x)
  stopped = grad(tiny_model(tf.float64, differentiable=False)[1], x)
  assert np.all(np.isfinite(full)) and np.all(np.isfinite(stopped))
  kept = features(x).numpy() != 0
  assert np.any(kept[:2]) and not np.all(kept[:2])  # a sample that drops units
  assert not np.any(kept[2]) and np.all(full[2] == 0)
  assert np.max(np.abs(full - stopped)) > 1e-2 * np.max(np.abs(full))
  # Central differences of the same-seed forward function, one input coordinate at a time.
  eps = 1e-6
  numeric = np.zeros_like(full)
  for b in range(2):
    for i in range(6):
      step = np.zeros(x.shape)
      step[b, i] = eps
      plus, minus = x + step, x - step
      for xs in (plus, minus):  # the kept set (and the ReLU pattern) of the sample is fixed
        np.testing.assert_array_equal(features(xs).numpy() != 0, kept)
      numeric[b, i] = (loss(plus).numpy() - loss(minus).numpy()) / (2 * eps)
  np.testing.assert_allclose(full[:2], numeric[:2], rtol=1e-6, atol=1e-9)
  assert not np.allclose(stopped[:2], numeric[:2], rtol=1e-3)  # the check can tell them apart


def test_full_gradient_in_float32_is_finite_with_dead_and_tiny_units():
  x = inputs(tf.float32)
  for frac in (0.1, 1.0, 3.0):
    g = grad(tiny_model(tf.float32, frac=frac)[1], x)
    assert np.all(np.isfinite(g)), frac
  # A unit of 1e-25 that is not drawn: 1 / keep_prob^2 overflows unless it is guarded.
  h = tf.constant([[1.0, 2.0, 1e-25, 0.5, 0.0, 3.0], [0.0] * 6])
  for i in range(3):
    out = sap.sap(h, 0.5, [i, 0])
    assert out[0, 2] == 0
    g = grad(lambda h: tf.reduce_sum(sap.sap(h, 0.5, [i, 0]) * tf.range(6.0)), h)
    assert np.all(np.isfinite(g)) and np.all(g[1] == np.arange(6)), g


def test_stopped_gradient_is_the_old_gradient():
  for seed in ((5, 1), (6, 2), (7, 3)):
    x = inputs(tf.float32)
    old = grad(tiny_model(tf.float32, seed, sampler=old_sap)[1], x)
    new = grad(tiny_model(tf.float32, seed, differentiable=False)[1], x)
    np.testing.assert_array_equal(new, old)
    full = grad(tiny_model(tf.float32, seed)[1], x)
    assert not np.array_equal(full, old)


def test_sap_net_passes_the_gradient_mode():
  net = LeNet5()
  x = tf.random.stateless_uniform([2, 28, 28, 1], [8, 8])
  net(x)
  grads, logits = {}, {}
  for differentiable in (True, False):
    wrapped = sap.SapNet(net, 1.0, differentiable=differentiable)
    assert wrapped.differentiable == differentiable
    tf.random.set_seed(3)  # the same SAP samples for both
    with tf.GradientTape() as tape:
      tape.watch(x)
      logits[differentiable] = wrapped(x)
      value = tf.reduce_sum(logits[differentiable][:, 0])
    grads[differentiable] = tape.gradient(value, x).numpy()
  np.testing.assert_array_equal(logits[True].numpy(), logits[False].numpy())
  assert np.all(np.isfinite(grads[True]))
  assert not np.allclose(grads[True], grads[False])
  assert sap.SapNet(net).differentiable


def test_sap_gradient_flag_and_config():
  import flags
  flag = flags.FLAGS["sap_gradient"]
  assert flag.default == "full" and list(flag.parser.enum_values) == ["full", "stopped"]
  assert Config().sap_gradient == "full"
  Config(sap_gradient="stopped").resolved()
  with pytest.raises(UserError, match="--sap_gradient"):
    Config(sap_gradient="none").resolved()


@pytest.mark.parametrize("mode,differentiable", [("full", True), ("stopped", False)])
def test_eval_wraps_the_net_with_the_flag_gradient(monkeypatch, mode, differentiable):
  from anp.evaluation import evaluate

  class Built(Exception):
    pass

  def sap_net(net, frac, differentiable):
    raise Built(frac, differentiable)
  monkeypatch.setattr(evaluate, "load_model", lambda *a: (object(), Config(), "checkpoint"))
  monkeypatch.setattr(evaluate, "SapNet", sap_net)
  with pytest.raises(Built) as built:
    evaluate.run_eval(Config(mode="eval", model_dir="unused", defense="sap", sap_frac=0.5,
                             sap_gradient=mode))
  assert built.value.args == (0.5, differentiable)


def test_sap_eot_script_agreement():
  """results/sap_eot.py's measure: sign agreement (where the reference is not 0) and cosine."""
  sap_eot = results_script("sap_eot")
  g = np.random.RandomState(0).normal(size=(3, 4, 4, 1))
  g[0, 0, 0, 0] = 0.0
  assert sap_eot.agreement(g, g) == pytest.approx((1.0, 1.0))
  assert sap_eot.agreement(-g, g) == pytest.approx((0.0, -1.0))
  ref = g.copy()
  ref[1, 0, 0, 0] = 0.0  # left out of the sign agreement
  flipped = ref.copy()
  flipped[1, 0, 0, 0] = 5.0
  assert sap_eot.agreement(flipped, ref)[0] == pytest.approx(1.0)


@pytest.mark.skipif(not have_real_data(), reason=f"real MNIST not found in {SHARED_DATA}")
@pytest.mark.slow
def test_sap_eot_script_on_the_committed_standard_base(tmp_path):
  out = subprocess.run(
      [sys.executable, os.path.join(REPO, "results", "sap_eot.py"),
       f"--model_dir={os.path.join(REPO, 'results', 'mnist', 'standard')}",
       f"--data_dir={SHARED_DATA}", "--examples=8", "--reference=8", "--ks=1,4", "--groups=2",
       f"--out_dir={tmp_path}"], capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-2000:]
  result = json.loads((tmp_path / "sap_eot.json").read_text())
  assert [r["samples"] for r in result["rows"]] == [1, 4, 8] and result["examples"] == 8
  for row in result["rows"]:
    assert 0.5 < row["sign_agreement"] <= 1.0 and 0.5 < row["cosine"] <= 1.0 + 1e-9
  # One sample is a noisier estimate than four, and than a second reference of eight.
  assert result["rows"][0]["cosine"] < result["rows"][1]["cosine"]
  assert "| 8 (a second reference) |" in (tmp_path / "sap_eot.md").read_text()
