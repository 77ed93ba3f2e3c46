import numpy as np
import pytest
import tensorflow as tf

from anp import admm


def test_project_keeps_exactly_k_largest():
  w = tf.constant(np.random.RandomState(0).randn(3, 3, 2, 4), tf.float32)
  p = admm.project(w, 7).numpy()
  assert np.count_nonzero(p) == 7
  kept = np.abs(p[p != 0])
  assert kept.min() >= np.sort(np.abs(w.numpy()).ravel())[-7] - 1e-7
  np.testing.assert_array_equal(p[p != 0], w.numpy()[p != 0])


def test_project_rejects_bad_keep():
  with pytest.raises(ValueError, match="Expected 0 <= keep"):
    admm.project(tf.ones([4]), 5)


def test_update_maths_on_toy_tensor():
  w = tf.Variable([[3.0, -1.0], [0.5, -4.0]])
  st = admm.ADMMState([w], prune_ratio=0.5, rho=1e-3, rho_growth=1.3)
  np.testing.assert_allclose(st.z[0].numpy(), [[3.0, 0.0], [0.0, -4.0]])
  np.testing.assert_allclose(st.u[0].numpy(), np.zeros([2, 2]))
  st.u[0].assign([[0.0, -2.0], [0.0, 0.0]])
  st.update()
  assert st.rho.numpy() == pytest.approx(1.3e-3)
  # W + U = [[3, -3], [0.5, -4]] -> keep -4 and one of the 3s (top_k: first index wins).
  z = st.z[0].numpy()
  assert np.count_nonzero(z) == 2 and z[1, 1] == -4.0
  np.testing.assert_allclose(st.u[0].numpy(), [[0, -2], [0, 0]] + w.numpy() - z)


def test_penalty_gradient_reaches_kernels():
  w = tf.Variable(np.random.RandomState(1).randn(5, 3).astype(np.float32))
  st = admm.ADMMState([w], prune_ratio=0.8, rho=0.1)
  with tf.GradientTape() as tape:
    loss = st.penalty()
  g = tape.gradient(loss, w).numpy()
  expected = 0.1 * (w.numpy() - st.z[0].numpy())
  np.testing.assert_allclose(g, expected, rtol=1e-5)
  assert np.count_nonzero(g) == 15 - 3
