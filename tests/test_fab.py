"""FAB-T (`attacks.fab`): the box-constrained L-inf projection onto a hyperplane, the closest
adversarial point of linear models (known in closed form), the eps-ball and box, its place in
--mode=eval (the `fab-t` attack), and results/fab_check.py."""

import numpy as np
import pytest
import tensorflow as tf

import attacks
from anp.evaluation import attack_specs
from anp.config import Config
from attacks.fab import fab_single_run, linf_step_to_hyperplane
from tests.helpers import results_script

N_CLASSES = 10


def linear(weights, bias):
  """logits = W x + b of flattened images, W [n, K]."""
  w, b = tf.constant(weights, tf.float32), tf.constant(bias, tf.float32)
  return lambda x: tf.matmul(tf.reshape(x, [tf.shape(x)[0], -1]), w) + b


def linf(a, b):
  return np.abs(np.asarray(a) - np.asarray(b)).reshape(len(a), -1).max(1)


def test_projection_is_the_smallest_linf_step_inside_the_box():
  rng = np.random.RandomState(0)
  rows, n = 64, 20
  t = rng.uniform(0, 1, (rows, n)).astype(np.float32)
  t[:, :3] = rng.randint(0, 2, (rows, 3))  # some coordinates on the bounds
  w = rng.normal(0, 1, (rows, n)).astype(np.float32)
  w[:, 3:5] = 0.0
  c = rng.normal(0, 4, rows).astype(np.float32)  # large |c|: the box often binds
  d = linf_step_to_hyperplane(tf.constant(t), tf.constant(w), tf.constant(c), 0.0, 1.0).numpy()
  assert np.all(d[:, 3:5] == 0.0)
  z = t + d
  assert z.min() >= -1e-6 and z.max() <= 1 + 1e-6
  # How far w.z can move towards the hyperplane within radius lam: every coordinate as far
  # as the box allows against sign(w c) (a linear function on a box: coordinate-wise).
  def best_move(lam):
    step = -np.sign(w * c[:, None]) * lam[:, None]
    return np.abs((w * (np.clip(t + step, 0, 1) - t)).sum(1))

  reachable = best_move(np.full(rows, 2.0)) >= np.abs(c)  # radius 2 spans the box
  assert 5 < reachable.sum() < rows - 5  # both kinds of rows are tested
  norm = np.abs(d).max(1)
  np.testing.assert_allclose((w * d).sum(1)[reachable], -c[reachable], atol=1e-4)
  # Minimal: a step of 0.999 times its norm cannot reach the hyperplane.
  assert np.all(best_move(0.999 * norm)[reachable] < np.abs(c)[reachable])
  # Out of reach: every coordinate with w != 0 goes to its bound, towards the hyperplane.
  far = ~reachable
  np.testing.assert_allclose(np.abs((w * d).sum(1))[far], best_move(np.full(rows, 2.0))[far],
                             rtol=1e-5)


def test_projection_is_exact_past_many_breakpoints():
  # r_i = t_i spread over [0, 1] (w = 1: each coordinate can fall to 0): lambda* = 0.7 lies
  # past 700 of the 1000 breakpoints, g(0.7) = sum_i min(0.7, t_i).
  t = np.linspace(0, 1, 1000, dtype=np.float32)[None]
  w = np.ones_like(t)
  c = np.minimum(0.7, t).sum(1)
  d = linf_step_to_hyperplane(tf.constant(t), tf.constant(w), tf.constant(c), 0.0, 1.0).numpy()
  assert np.abs(d).max() == pytest.approx(0.7, rel=1e-5)
  np.testing.assert_allclose(t + d, np.maximum(t - 0.7, 0.0), atol=1e-5)


def test_fab_t_finds_the_closest_adversarial_point_of_a_linear_model():
  rng = np.random.RandomState(1)
  weights = rng.normal(0, 1, (64, N_CLASSES)).astype(np.float32)
  bias = rng.normal(0, 1, N_CLASSES).astype(np.float32)
  model = linear(weights, bias)
  x = rng.uniform(0.3, 0.7, (60, 8, 8, 1)).astype(np.float32)
  logits = model(x).numpy()
  y = logits.argmax(1)
  # The closest misclassified point, in closed form: min over j != y of
  # (z_y - z_j) / ||w_y - w_j||_1, the L-inf distance to the halfspace z_j >= z_y (all
  # distances are below 0.3, so the box [0, 1] does not bind).
  gaps = logits[np.arange(60), y][:, None] - logits
  norms = np.abs(weights[:, y].T[:, :, None] - weights[None]).sum(1)
  own = np.arange(N_CLASSES) == y[:, None]
  closest = np.where(own, np.inf, gaps / np.where(own, 1.0, norms)).min(1)
  assert closest.max() < 0.3
  eps = float(np.median(closest))
  run = tf.function(lambda a, b: attacks.fab_targeted(model, a, b, eps, 100))
  x_adv = run(tf.constant(x), tf.constant(y)).numpy()
  fooled = model(x_adv).numpy().argmax(1) != y
  dist = linf(x_adv, x)
  clear = np.abs(closest / eps - 1) > 0.01  # FAB ends within 1% of the closest point
  assert clear.sum() > 50
  np.testing.assert_array_equal(fooled[clear], (closest <= eps)[clear])
  assert np.all(dist[fooled] >= closest[fooled] * (1 - 1e-4))
  assert np.all(dist[fooled] <= eps)
  np.testing.assert_array_equal(x_adv[~fooled], x[~fooled])  # not found within eps: x


@pytest.mark.slow
def test_fab_t_respects_the_box_where_it_binds():
  """Logit 1 - logit 0 = sum(x) - 6.8, the other classes far below. At x (4 pixels at 1, 4 at
  0.5; sum 6) the gap is 0.8 and only the 4 pixels at 0.5 can rise: the closest misclassified
  point is 0.2 away (0.1 if the box were ignored)."""
  def model(x):
    score = tf.reduce_sum(tf.reshape(x, [tf.shape(x)[0], -1]), axis=1) - 6.8
    return tf.concat([tf.zeros_like(score)[:, None], score[:, None],
                      tf.fill([tf.shape(x)[0], N_CLASSES - 2], -50.0)], axis=1)

  x = np.full((2, 2, 4, 1), 0.5, np.float32)
  x[:, 0] = 1.0
  y = tf.zeros([2], tf.int64)
  assert np.all(attacks.correct(model, x, y).numpy())
  for eps in (0.15, 0.19):
    np.testing.assert_array_equal(attacks.fab_targeted(model, tf.constant(x), y, eps, 50), x)
  x_adv = attacks.fab_targeted(model, tf.constant(x), y, 0.21, 50).numpy()
  assert not np.any(attacks.correct(model, x_adv, y).numpy())
  assert np.all((linf(x_adv, x) >= 0.2 - 1e-5) & (linf(x_adv, x) <= 0.21))
  assert x_adv.max() <= 1.0
  np.testing.assert_array_equal(x_adv[:, 0], x[:, 0])  # the pixels at the bound stay


def test_fab_t_stays_in_the_eps_ball_and_the_box_and_compiles():
  tf.keras.utils.set_random_seed(0)
  net = tf.keras.Sequential([
      tf.keras.Input((8, 8, 3)),
      tf.keras.layers.Conv2D(6, 3, padding="same", activation="relu"),
      tf.keras.layers.Flatten(), tf.keras.layers.Dense(N_CLASSES)])
  model = lambda t: net(t, training=False)  # noqa: E731
  rng = np.random.RandomState(2)
  x = tf.constant(rng.uniform(0, 1, (32, 8, 8, 3)).astype(np.float32))
  y = tf.argmax(model(x), -1)
  y = tf.where(tf.range(32) < 4, (y + 1) % N_CLASSES, y)  # 4 misclassified at x: kept as x
  run = tf.function(lambda a, b: attacks.fab_targeted(model, a, b, 0.03, 20, n_targets=3))
  x_adv = run(x, y).numpy()
  assert np.max(linf(x_adv, x.numpy())) <= 0.03
  assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
  np.testing.assert_array_equal(x_adv[:4], x.numpy()[:4])
  fooled = ~attacks.correct(model, x_adv, y).numpy()[4:]
  assert 0 < fooled.sum() < 28
  unchanged = np.all(x_adv[4:] == x.numpy()[4:], axis=(1, 2, 3))
  np.testing.assert_array_equal(unchanged, ~fooled)  # robust rows get x back
  more = attacks.fab_targeted(model, x, y, 0.03, 20, n_targets=3, restarts=2, seed=0)
  assert (~attacks.correct(model, more, y).numpy()[4:]).sum() >= fooled.sum()
  assert np.max(linf(more, x.numpy())) <= 0.03


def two_way_model():
  """Class 0 at 2.3; class 1 = sum(x) (2 at x = 0.5: closest misclassified point 0.075 away,
  (2.3 - 2) / |w|_1); class 2 = 0.1 x_0 (cannot beat class 0 within 0.5); the rest far below."""
  weights = np.zeros((4, N_CLASSES), np.float32)
  weights[:, 1] = 1.0
  weights[0, 2] = 0.1
  bias = np.full(N_CLASSES, -50.0, np.float32)
  bias[:3] = (2.3, 0.0, 0.0)
  return linear(weights, bias)


def test_fab_single_run_attacks_its_target():
  model = two_way_model()
  x = tf.fill([1, 2, 2, 1], 0.5)
  y = tf.zeros([1], tf.int64)
  reach = fab_single_run(model, x, y, tf.constant([1]), 0.2, 30)
  miss = fab_single_run(model, x, y, tf.constant([2]), 0.2, 30)
  assert not attacks.correct(model, reach, y).numpy()[0]
  distance = linf(reach, x)[0]  # at least 0.075, at most one overshoot (x 1.05) above
  assert 0.075 * (1 - 1e-4) <= distance <= 0.075 * 1.05 + 1e-6
  np.testing.assert_array_equal(miss, x)


def test_fab_t_targets_the_runner_up_classes_in_order():
  """Runner-up class 1 (logit 2.0 at x) can only win 0.4 away (weight 0.25 on one pixel),
  class 2 (third, 1.8 at x) 0.1 away (weight 1 on the other three): one target misses within
  eps 0.2, two find class 2."""
  weights = np.zeros((4, N_CLASSES), np.float32)
  weights[0, 1] = 0.25
  weights[1:, 2] = 1.0
  bias = np.full(N_CLASSES, -50.0, np.float32)
  bias[:3] = (2.1, 2.0 - 0.125, 1.8 - 1.5)
  model = linear(weights, bias)
  x = tf.fill([1, 2, 2, 1], 0.5)
  y = tf.zeros([1], tf.int64)
  np.testing.assert_allclose(model(x).numpy()[0, :3], [2.1, 2.0, 1.8], atol=1e-6)
  one = attacks.fab_targeted(model, x, y, 0.2, 50, n_targets=1)
  two = attacks.fab_targeted(model, x, y, 0.2, 50, n_targets=2)
  np.testing.assert_array_equal(one, x)
  assert model(two).numpy().argmax(1)[0] == 2
  assert 0.1 * (1 - 1e-4) <= linf(two, x)[0] <= 0.2


def test_fab_t_checks_its_arguments():
  model = linear(np.zeros((4, N_CLASSES), np.float32), np.arange(N_CLASSES, dtype=np.float32))
  x, y = tf.zeros([2, 2, 2, 1]), tf.zeros([2], tf.int64)
  for kwargs, match in ((dict(eta=0.9), "eta"), (dict(beta=0.0), "beta"),
                        (dict(alpha_max=1.5), "alpha_max"), (dict(restarts=0), "restarts"),
                        (dict(clip_max=None), "finite box"), (dict(n_targets=10), "targets")):
    with pytest.raises(ValueError, match=match):
      attacks.fab_targeted(model, x, y, 0.1, 2, **kwargs)
  with pytest.raises(ValueError, match="eps"):
    attacks.fab_targeted(model, x, y, -0.1, 2)


def test_fab_t_is_an_eval_attack():
  assert "fab-t" in attack_specs.ATTACKS
  cfg = Config(mode="eval", attack="fab-t,autoattack").resolved()
  assert list(attack_specs.attack_specs(cfg)) == ["fab-t", "autoattack"]
  model = two_way_model()
  x = tf.fill([3, 2, 2, 1], 0.5)
  y = tf.zeros([3], tf.int64)
  for eps, fooled in ((0.1, True), (0.07, False)):
    spec = attack_specs.AttackSpec("fab-t", eps=eps, step_size=0.01, steps=20, restarts=2)
    attack = attack_specs.make_attack(spec)
    assert attack.__name__ == "fab-t"
    x_adv = attack(model, x, y)
    assert np.all(attacks.correct(model, x_adv, y).numpy() != fooled)
    assert np.max(linf(x_adv, x)) <= eps


def test_fab_check_script_reports_each_stage():
  fab_check = results_script("fab_check")
  tf.keras.utils.set_random_seed(0)
  net = tf.keras.Sequential([tf.keras.Input((8, 8, 1)), tf.keras.layers.Flatten(),
                             tf.keras.layers.Dense(N_CLASSES)])
  model = lambda t: net(t, training=False)  # noqa: E731
  x = np.random.RandomState(5).uniform(0, 1, (24, 8, 8, 1)).astype(np.float32)
  y = model(x).numpy().argmax(1).astype(np.int64)
  x_adv, after, seconds, clean = fab_check.cascade(
      model, x, y, eps=0.05, steps=5, targets=2, queries=10, seed=0, batch=10, clip=(0.0, 1.0),
      verbose=False)
  assert list(after) == ["apgd-ce", "apgd-t", "fab-t", "square"] and set(seconds) == set(after)
  assert clean.all()
  counts = [clean.sum()] + [after[n].sum() for n in after]
  assert counts == sorted(counts, reverse=True)  # each stage only removes examples
  np.testing.assert_array_equal(after["square"], attacks.correct(model, x_adv, y).numpy())
  assert linf(x_adv, x).max() <= 0.05 + 1e-6
  _, after, _, _ = fab_check.cascade(model, x, y, eps=0.05, steps=5, targets=2, queries=0,
                                     seed=0, batch=10, clip=(0.0, 1.0), verbose=False)
  assert list(after) == ["apgd-ce", "apgd-t", "fab-t"]  # no Square
  result = dict(run="tiny", clean=24, eps=0.05, examples=24, steps=5, targets=2,
                square_queries=0, robust_after={n: int(after[n].sum()) for n in after},
                fooled_by={"fab-t": 0}, seconds={n: 1.0 for n in after},
                attacked_by={"fab-t": 3}, fab_t_seconds_per_1000_images=41.7,
                machine="m", load_average_1min=[1.0, 1.0])
  table = fab_check.markdown([result])
  assert "| Model | Clean | after APGD-CE | after APGD-T | after FAB-T |" in table
  assert "| tiny | 24 |" in table and "41.7" in table
