"""Square, APGD-T and the AutoAttack cascade (`attacks.square`, `attacks.autoattack`) on tiny
models, and their place in --mode=eval: specs, per-stage accuracies, the gradient-free check.
FAB-T itself: tests/test_fab.py."""

import importlib

import numpy as np
import pytest
import tensorflow as tf

import attacks
from anp.evaluation import attack_specs, eval_net, sanity
from anp.config import Config
from anp.errors import UserError
from attacks import losses
from attacks.square import square_fraction, square_sides

N_CLASSES = 10


def conv_model(channels=3, seed=0):
  tf.keras.utils.set_random_seed(seed)
  return tf.keras.Sequential([
      tf.keras.Input((8, 8, channels)),
      tf.keras.layers.Conv2D(6, 3, padding="same", activation="relu"),
      tf.keras.layers.Flatten(), tf.keras.layers.Dense(N_CLASSES)])


def fn_of(model):
  return lambda t: model(t, training=False)


def margins(model_fn, x, y):
  return losses.margin(model_fn(x), tf.constant(y)).numpy()


class PatchModel:
  """A constructed classifier whose only adversarial examples within eps = 0.3 of x = 0.5 set
  all four pixels of one 2x2 patch to 0.8: logit 1 - logit 0 = sum_patch (x - 0.5) - 1.1,
  where three pixels at +0.3 give at most 0.9 - 0.3 = 0.6 < 1.1 <= 1.2. The input gradient is
  exactly zero: a masked gradient no gradient attack can follow."""

  patch = (slice(2, 4), slice(5, 7))

  def __call__(self, x):
    x = tf.stop_gradient(x) + 0.0 * x  # connected to x, gradient exactly 0
    score = tf.reduce_sum(x[:, 2:4, 5:7, 0] - 0.5, axis=[1, 2]) - 1.1
    other = tf.fill([tf.shape(x)[0], N_CLASSES - 2], -10.0)
    return tf.concat([tf.zeros_like(score)[:, None], score[:, None], other], axis=1)


def test_square_schedule_is_the_published_one():
  assert square_fraction(0, 5000) == 0.8
  assert square_fraction(10, 5000) == 0.8 and square_fraction(11, 5000) == 0.4
  assert square_fraction(4999, 5000) == pytest.approx(0.8 / 128)
  assert square_fraction(4999, 5000, rescale_schedule=True) == pytest.approx(0.8 / 512)
  sides = square_sides(5000, 28, 28)
  assert sides[0] == 25 and sides[-1] == 2 and sides.min() >= 1
  assert square_sides(10, 2, 2).max() == 1  # at most min(H, W) - 1


def test_square_stays_in_the_eps_box_and_the_valid_range():
  model = fn_of(conv_model())
  x = tf.constant(np.random.RandomState(0).uniform(0, 1, (16, 8, 8, 3)).astype(np.float32))
  y = tf.argmax(model(x), -1)
  x_adv = attacks.square(model, x, y, 0.1, 40, seed=3).numpy()
  assert np.max(np.abs(x_adv - x.numpy())) <= 0.1 + 1e-6
  assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
  # Square moves to the vertices of the box: every coordinate at x +- eps, or at a bound.
  delta = np.abs(x_adv - x.numpy())
  at_bound = (x_adv == 0.0) | (x_adv == 1.0)
  assert np.all(np.isclose(delta, 0.1, atol=1e-6) | at_bound)


def test_square_never_raises_the_margin():
  model = fn_of(conv_model(seed=2))
  x = tf.constant(np.random.RandomState(1).uniform(0, 1, (32, 8, 8, 3)).astype(np.float32))
  y = tf.argmax(model(x), -1).numpy()
  # Without rescaling the schedule does not depend on the budget: with one seed a longer run
  # continues a shorter one, so the margin of each example can only fall.
  runs = [margins(model, attacks.square(model, x, y, 0.05, q, seed=7), y) for q in (0, 5, 60)]
  assert np.all(runs[1] <= runs[0]) and np.all(runs[2] <= runs[1])
  assert np.any(runs[2] < runs[0])  # and the search does make progress


def test_square_finds_the_one_adversarial_example_where_gradients_are_masked():
  model = PatchModel()
  x = tf.fill([4, 8, 8, 1], 0.5)
  y = tf.zeros([4], tf.int64)
  assert np.all(attacks.correct(model, x, y).numpy())
  x_pgd = attacks.pgd(model, x, y, 0.3, 0.05, 20, seed=0)
  assert np.all(attacks.correct(model, x_pgd, y).numpy())  # the gradient is zero
  x_adv = attacks.square(model, x, y, 0.3, 300, seed=0).numpy()
  assert not np.any(attacks.correct(model, x_adv, y).numpy())
  np.testing.assert_allclose(x_adv[:, 2:4, 5:7, 0], 0.8, atol=1e-6)


def test_square_checks_its_arguments():
  model = fn_of(conv_model())
  x, y = tf.zeros([2, 8, 8, 3]), tf.zeros([2], tf.int64)
  with pytest.raises(ValueError, match="p_init"):
    attacks.square(model, x, y, 0.1, 5, p_init=0.0)
  with pytest.raises(ValueError, match="queries"):
    attacks.square(model, x, y, 0.1, -1)
  with pytest.raises(ValueError, match=r"\[B, H, W, C\]"):
    attacks.square(lambda t: t, tf.zeros([2, 10]), y, 0.1, 5)


def test_targeted_dlr_and_margin():
  logits = tf.constant([[4.0, 1.0, 3.0, 0.0, -1.0]])
  y, t = tf.constant([0]), tf.constant([2])
  # -(z_y - z_t) / (z_1 - (z_3 + z_4) / 2) = -(4 - 3) / (4 - (1 + 0) / 2)
  assert losses.dlr_targeted(logits, y, t).numpy()[0] == pytest.approx(-1 / 3.5)
  assert losses.margin(logits, y).numpy()[0] == pytest.approx(1.0)
  with pytest.raises(ValueError, match="4 classes"):
    losses.dlr_targeted(tf.zeros([1, 3]), y, t)


def test_apgd_targeted_reaches_runner_up_classes_and_checks_targets():
  model = fn_of(conv_model(seed=3))
  x = tf.constant(np.random.RandomState(2).uniform(0, 1, (32, 8, 8, 3)).astype(np.float32))
  y = tf.argmax(model(x), -1)
  x_adv = attacks.apgd_targeted(model, x, y, 0.05, 20, targets=3, seed=0)
  assert np.max(np.abs(x_adv - x)) <= 0.05 + 1e-6
  fooled = ~attacks.correct(model, x_adv, y).numpy()
  assert fooled.mean() > 0.5
  one = attacks.apgd_targeted(model, x, y, 0.05, 20, targets=1, seed=0)
  assert (~attacks.correct(model, one, y).numpy()).sum() <= fooled.sum()  # more targets help
  with pytest.raises(ValueError, match="targets"):
    attacks.apgd_targeted(model, x, y, 0.05, 2, targets=10)


def test_on_still_robust_attacks_only_the_robust_rows():
  seen = []

  def attack(model_fn, xs, ys):
    del model_fn
    seen.append(int(xs.shape[0]))
    return xs + 1.0  # "fools" every row it sees, for the model below

  model = lambda t: tf.one_hot(tf.cast(tf.reduce_mean(t, [1, 2, 3]) > 0.5, tf.int32),  # noqa
                               N_CLASSES)
  x, y = tf.zeros([5, 2, 2, 1]), tf.zeros([5], tf.int64)
  robust = tf.constant([True, False, True, False, False])
  x_adv, left = attacks.on_still_robust(attack, model, x, y, x, robust)
  assert seen == [2]
  np.testing.assert_array_equal(x_adv.numpy()[:, 0, 0, 0], [1, 0, 1, 0, 0])
  assert not left.numpy().any()
  attacks.on_still_robust(attack, model, x, y, x_adv, left)
  assert seen == [2]  # nobody robust: not called


def test_the_judge_decides_and_a_random_nets_cascade_verdict_stands():
  # on_still_robust: the crafting model is fooled by every attacked row, the judge by none.
  model = lambda t: tf.one_hot(tf.cast(tf.reduce_mean(t, [1, 2, 3]) > 0.5, tf.int32),  # noqa
                               N_CLASSES)
  def judge(t, label=0):
    return tf.one_hot(tf.fill(tf.shape(t)[:1], label), N_CLASSES)

  x, y = tf.zeros([4, 2, 2, 1]), tf.zeros([4], tf.int64)
  robust = tf.ones([4], tf.bool)
  _, left = attacks.on_still_robust(lambda m, xs, ys: xs + 1.0, model, x, y, x, robust,
                                    judge_fn=judge)
  assert left.numpy().all()
  _, stages = attacks.autoattack(model, x, y, 0.3, steps=2, targets=2, queries=5,
                                 return_stages=True, judge_fn=lambda t: judge(t, label=1))
  assert not stages.numpy().any()  # wrong by the judge at x: never attacked, never robust

  # In --mode=eval a cascade's verdict is the one made by the net right after its last stage,
  # not a fresh prediction of a random net at the end.
  def coin_net(t, training=False, return_features=False):
    del training, return_features
    heads = tf.random.uniform(tf.shape(t)[:1]) < 0.5
    return tf.one_hot(tf.cast(heads, tf.int32), N_CLASSES)

  def cascade(model_fn, xs, ys):
    return xs

  def with_stages(model_fn, xs, ys, judge_fn=None):
    return xs, tf.stack([attacks.correct(judge_fn or model_fn, xs, ys)])

  cascade.stages, cascade.with_stages = ("only",), with_stages
  step = eval_net.make_eval_step(coin_net, [("cascade", cascade)])
  out = step(tf.zeros([400, 2, 2, 1]), tf.zeros([400], tf.int64))
  per = out["per_attack"].numpy()
  np.testing.assert_array_equal(per[1], per[0])  # "cascade" row = "cascade/only" row
  np.testing.assert_array_equal(out["adv"].numpy(), per[0])
  assert 100 < per[0].sum() < 300  # a coin: a fresh prediction would disagree on ~200


def test_autoattack_cascade_catches_masked_gradients_with_square():
  model = PatchModel()
  x = tf.fill([3, 8, 8, 1], 0.5)
  y = tf.constant([0, 0, 1])  # the last one is misclassified at x: not attacked
  x_adv, stages = attacks.autoattack(model, x, y, 0.3, steps=10, targets=2, queries=300,
                                     seed=0, return_stages=True)
  # APGD-CE, APGD-T and FAB-T follow the zero gradient nowhere; Square finds the patch.
  np.testing.assert_array_equal(stages.numpy(), [[1, 1, 0], [1, 1, 0], [1, 1, 0], [0, 0, 0]])
  assert attacks.autoattack_stages() == ("apgd-ce", "apgd-t", "fab-t", "square")
  assert attacks.autoattack_stages("rand") == ("apgd-ce", "apgd-dlr")
  assert not np.any(attacks.correct(model, x_adv, y).numpy())
  np.testing.assert_array_equal(x_adv[2], x[2])


def test_autoattack_is_at_least_as_strong_as_each_stage_and_compiles():
  model = fn_of(conv_model(seed=4))
  x = tf.constant(np.random.RandomState(3).uniform(0, 1, (48, 8, 8, 3)).astype(np.float32))
  y = tf.argmax(model(x), -1)
  run = tf.function(lambda a, b: attacks.autoattack(model, a, b, 0.02, steps=10, targets=3,
                                                    queries=30, return_stages=True))
  x_adv, stages = run(x, y)
  stages = stages.numpy()
  assert np.all(stages[1:] <= stages[:-1])  # robust only shrinks along the cascade
  robust = attacks.correct(model, x_adv, y).numpy()
  np.testing.assert_array_equal(robust, stages[-1])
  assert np.max(np.abs(x_adv - x)) <= 0.02 + 1e-6
  alone = attacks.correct(model, attacks.apgd(model, x, y, 0.02, 10), y).numpy()
  assert robust.sum() <= alone.sum()


def test_fab_t_runs_in_the_cascade_only_on_the_examples_apgd_left(monkeypatch):
  model = fn_of(conv_model(seed=5))
  x = tf.constant(np.random.RandomState(4).uniform(0, 1, (40, 8, 8, 3)).astype(np.float32))
  y = tf.argmax(model(x), -1)
  y = tf.where(tf.range(40) < 3, (y + 1) % N_CLASSES, y)  # misclassified clean: not attacked
  seen = []
  module = importlib.import_module("attacks.autoattack")  # attacks.autoattack: the function
  real = module.fab_targeted

  def spy(model_fn, xs, ys, eps, steps, **kw):
    seen.append((xs.numpy(), ys.numpy(), eps, steps, kw["n_targets"]))
    return real(model_fn, xs, ys, eps, steps, **kw)

  monkeypatch.setattr(module, "fab_targeted", spy)
  _, stages = attacks.autoattack(model, x, y, 0.08, steps=5, targets=3, queries=20, seed=0,
                                 return_stages=True)
  stages = stages.numpy()
  assert stages.shape == (4, 40) and len(seen) == 1
  xs, ys, eps, steps, targets = seen[0]
  after_apgd = stages[1].astype(bool)
  assert 0 < after_apgd.sum() < 37  # APGD fooled some, left some
  np.testing.assert_array_equal(xs, x.numpy()[after_apgd])  # the clean points of those left
  np.testing.assert_array_equal(ys, y.numpy()[after_apgd])
  assert (eps, steps, targets) == (0.08, 5, 3)
  assert np.all(stages[2] <= stages[1]) and np.all(stages[3] <= stages[2])


def test_attack_names_and_specs():
  from attacks.autoattack import eot_samples_of
  assert attack_specs.attack_names("strongest,autoattack") == attack_specs.STRONGEST + (
      "autoattack",)
  assert "square" in attack_specs.STRONGEST
  cfg = Config(mode="eval", attack="pgd,autoattack", square_queries=50).resolved()
  specs = attack_specs.attack_specs(cfg)
  assert specs["autoattack"].as_dict()["stages"] == ["apgd-ce", "apgd-t", "fab-t", "square"]
  assert specs["autoattack"].as_dict()["steps"] == attack_specs.AUTOATTACK_STEPS
  assert specs["autoattack"].queries == 50
  assert specs["autoattack"].as_dict()["eot_samples"] == 1
  rand = Config(mode="eval", attack="autoattack-rand").resolved()  # eot_samples: 1
  assert attack_specs.attack_specs(rand)["autoattack-rand"].as_dict()["eot_samples"] == 20
  rand = Config(mode="eval", attack="autoattack-rand", eot_samples=5).resolved()
  assert attack_specs.attack_specs(rand)["autoattack-rand"].as_dict()["eot_samples"] == 5
  many = Config(mode="eval", attack="autoattack,fab-t", eot_samples=5).resolved()
  assert [s.as_dict()["eot_samples"] for s in attack_specs.attack_specs(many).values()] == [1, 1]
  assert [eot_samples_of(v, e) for v, e in [
      ("standard", None), ("standard", 3), ("rand", None), ("rand", 1), ("rand", 3)]] == [
          1, 3, 20, 20, 3]
  with pytest.raises(ValueError, match="version"):
    eot_samples_of("fast")
  attack = attack_specs.make_attack(specs["autoattack"])
  assert attack.stages == ("apgd-ce", "apgd-t", "fab-t", "square")
  assert attack_specs.attack_names("fab-t,autoattack") == ("fab-t", "autoattack")
  for bad in ("autoattack,autoattack", "square,bogus"):
    with pytest.raises(UserError, match="--attack"):
      Config(mode="eval", attack=bad).resolved()
  with pytest.raises(UserError, match="--square_queries"):
    Config(mode="eval", square_queries=0).resolved()


def test_gradient_free_check():
  per = {"autoattack/apgd-ce": 0.80, "autoattack/apgd-t": 0.75, "autoattack/square": 0.70,
         "autoattack": 0.70}
  check = sanity.gradient_free_check(per, tol=0.015)
  assert not check["passed"]
  assert check["found_only_by_gradient_free"] == pytest.approx(0.05)
  assert sanity.gradient_free_check(dict(per, **{"autoattack/square": 0.745}), 0.015)["passed"]
  # With FAB-T in the cascade, what Square alone finds is counted after FAB-T.
  with_fab = dict(per, **{"autoattack/fab-t": 0.71})
  assert sanity.gradient_free_check(with_fab, 0.015)["passed"]
  assert sanity.gradient_free_check(with_fab, 0.015)["gradient_attacks_acc"] == 0.71
  assert sanity.gradient_free_check({"pgd": 0.5}, 0.015) is None
