"""One device vs two replicas (MirroredStrategy on two logical CPU devices), same global batch.

Run by tests/test_distribute.py in a subprocess (logical devices must be configured before TF
starts). Prints one JSON object: per method, the logs of each step and the largest absolute
difference of every group of variables after the steps; for evaluation, both results.

  python tests/distribute_check.py [--methods=anp_vs,at] [--steps=2] [--batch=16]
"""

import argparse
import json
import os
import sys
from unittest import mock

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])

import anp.training.model  # noqa: E402
import keras  # noqa: E402
from anp.training import distribute  # noqa: E402
from anp.config import Config  # noqa: E402
from anp.evaluation.eval_net import evaluate_net  # noqa: E402
from anp.runs.rundir import build_net  # noqa: E402
from anp.training.train import make_trainer  # noqa: E402
from attacks import pgd  # noqa: E402


def build(cfg, strategy, init=None, optimizer="adam"):
  """The net and trainer of `cfg`; optimizer 'sgd' swaps the trainer's Adams for plain SGD."""
  with distribute.scope(strategy), mock.patch.object(
      anp.training.model, "adam", OPTIMIZERS[optimizer]):
    net = build_net(cfg)
    trainer = make_trainer(net, cfg, n_train=60000, total_steps=1000)
  if init is not None:
    for v, value in zip(net.variables, init):
      v.assign(value)
  return net, trainer


# SGD's update is lr * gradient, so equal weights after the steps mean equal all-reduced
# gradients. Adam's first steps move every weight by ~lr * sign(gradient): a gradient within
# float rounding of zero (the two runs sum in different orders) may move its weight by +-lr
# either way, so under Adam the moments, not the weights, are the well-conditioned check.
OPTIMIZERS = {"adam": anp.training.model.adam,
              "sgd": lambda learning_rate: keras.optimizers.SGD(learning_rate=learning_rate)}


def variable_groups(net, trainer):
  groups = dict(weights=net.weight_variables, masks=net.mask_variables,
                optimizer=trainer.optimizer.variables)
  if trainer.mask_optimizer is not None:
    groups["mask_optimizer"] = trainer.mask_optimizer.variables
  return {k: [np.asarray(v.numpy()) for v in vs] for k, vs in groups.items()}


def max_diff(a, b):
  return max((float(np.max(np.abs(x.astype(np.float64) - y))) for x, y in zip(a, b)),
             default=0.0)


def compare_training(method, steps, batch, strategy, optimizer):
  cfg = Config(dataset="mnist", method=method, train_attack_steps=3).resolved()
  rng = np.random.default_rng(0)
  x = tf.constant(rng.uniform(size=(batch, 28, 28, 1)), tf.float32)
  y = tf.constant(rng.integers(0, 10, size=batch), tf.int32)
  one_net, one = build(cfg, None, optimizer=optimizer)
  init = [v.numpy() for v in one_net.variables]
  weights0 = [v.numpy() for v in one_net.weight_variables]
  two_net, two = build(cfg, strategy, init, optimizer=optimizer)
  one_step = distribute.train_step(None, one)
  two_step = distribute.train_step(strategy, two)
  logs = {"one": [], "two": []}
  for _ in range(steps):
    logs["one"].append({k: float(v) for k, v in one_step((x, y)).items()})
    logs["two"].append({k: float(v) for k, v in two_step((x, y)).items()})
  a, b = variable_groups(one_net, one), variable_groups(two_net, two)
  changed = max_diff(a["weights"], weights0)
  one_val = distribute.validation_step(None, one)
  two_val = distribute.validation_step(strategy, two)
  seed = tf.constant([3, 4], tf.int64)
  val = {"one": {k: float(v) for k, v in one_val(x[:11], y[:11], seed).items()},
         "two": {k: float(v) for k, v in two_val(x[:11], y[:11], seed).items()}}
  return dict(logs=logs, max_abs_diff={k: max_diff(a[k], b[k]) for k in a},
              weights_moved=changed, validation=val)


def compare_eval(strategy):
  cfg = Config(dataset="mnist", method="anp_vs").resolved()
  net = build_net(cfg)
  rng = np.random.default_rng(1)
  x = rng.uniform(size=(45, 28, 28, 1)).astype(np.float32)
  y = rng.integers(0, 10, size=45).astype(np.int32)
  ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(25)  # 25 = 13 + 12, then 20

  def attack(model_fn, xb, yb):
    return pgd(model_fn, xb, yb, eps=0.3, step_size=0.05, steps=5, seed=7)

  out = {}
  for name, s in (("one", None), ("two", strategy)):
    r = evaluate_net(net, ds, {"pgd": attack}, verbose=False, compact=True, strategy=s)
    out[name] = {k: r[k] for k in ("clean_acc", "adv_acc", "examples", "vulnerability",
                                   "layer_vulnerability", "max_linf")}
  return out


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--methods", default="anp_vs,at")
  parser.add_argument("--steps", type=int, default=2)
  parser.add_argument("--batch", type=int, default=16)
  args = parser.parse_args()
  keras.utils.set_random_seed(0)
  strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
  result = dict(replicas=strategy.num_replicas_in_sync,
                # Adam: one step (a +-lr weight flip in step 1 changes step 2's gradients).
                train={f"{m}/{o}": compare_training(m, args.steps if o == "sgd" else 1,
                                                    args.batch, strategy, o)
                       for m in args.methods.split(",") for o in OPTIMIZERS},
                eval=compare_eval(strategy))
  print("RESULT " + json.dumps(result))


if __name__ == "__main__":
  main()
