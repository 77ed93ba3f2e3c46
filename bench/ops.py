"""Single ops of LeNet5 in isolation: where the compact model's and the step's floors are.

  python bench/ops.py [--reps=50]

Prints one JSON object per measurement (ms: the mean over --reps calls of a compiled function,
after two warm-up calls):
  - conv1: LeNet's 5x5 convolution of a one-channel 28x28 image to F filters, with its bias
    and ReLU, at batch 256 and 64, as oneDNN runs it (`conv2d`) and two rewrites (`im2col`:
    `extract_patches` + one matmul; `shifted`: 25 shifted multiply-adds). Shows whether fewer
    filters (a pruned conv1) make it faster.
  - conv2_fwd_dx / dense3_fwd: the largest conv and matmul of an attack step (batch 64,
    conv2 forward + input gradient, dense3 forward) in float32 and bfloat16
    (`--train_attack_dtype`).
  - sap_draw: which units SAP keeps (`anp.evaluation.sap.drawn`, r = n draws with replacement)
    for 1000 examples of LeNet5's post-ReLU activations (conv1 [24, 24, 20] = 11520 units,
    conv2 [8, 8, 50] = 3200), against r calls of `tf.random.categorical` and a bincount
    (`categorical`), the same distribution; at most 5 calls each.
"""

import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

from anp.evaluation.sap import drawn  # noqa: E402
from bench.common import device  # noqa: E402

flags.DEFINE_integer("reps", 50, "Timed calls per measurement.", lower_bound=1)
FLAGS = flags.FLAGS


def ms_per_call(fn, *args, reps=None):
  reps = reps or FLAGS.reps
  fn(*args)
  fn(*args).numpy()
  start = time.perf_counter()
  for _ in range(reps):
    out = fn(*args)
  out.numpy()
  return round((time.perf_counter() - start) / reps * 1000, 3)


def sap_draws(units):
  def categorical(p):
    draws = tf.random.categorical(tf.math.log(tf.maximum(p, 1e-30)), units)
    return tf.math.bincount(tf.cast(draws, tf.int32), minlength=units, maxlength=units,
                            axis=-1) > 0

  return {"categorical": categorical, "drawn": lambda p: drawn(p, units)}


def conv1_variants(filters):
  bias = tf.zeros([filters])

  def conv2d(x, k):
    return tf.nn.relu(tf.nn.conv2d(x, k, 1, "VALID") + bias)

  def im2col(x, k):
    patches = tf.image.extract_patches(x, [1, 5, 5, 1], [1, 1, 1, 1], [1, 1, 1, 1], "VALID")
    out = tf.reshape(patches, [-1, 25]) @ tf.reshape(k, [25, filters])
    return tf.nn.relu(tf.reshape(out, [tf.shape(x)[0], 24, 24, filters]) + bias)

  def shifted(x, k):
    acc = tf.zeros([tf.shape(x)[0], 24, 24, filters])
    for i in range(5):
      for j in range(5):
        acc += x[:, i:i + 24, j:j + 24, :] * k[i, j, 0]
    return tf.nn.relu(acc + bias)

  return dict(conv2d=conv2d, im2col=im2col, shifted=shifted)


def main(_):
  for batch in (256, 64):
    for filters in (6, 20):
      x = tf.random.stateless_uniform([batch, 28, 28, 1], [0, 1])
      k = tf.random.stateless_normal([5, 5, 1, filters], [0, 2])
      for name, fn in conv1_variants(filters).items():
        print(json.dumps(dict(op="conv1", variant=name, batch=batch, filters=filters,
                              ms=ms_per_call(tf.function(fn), x, k), device=device())),
              flush=True)
  for dtype in (tf.float32, tf.bfloat16):
    h = tf.cast(tf.random.stateless_uniform([64, 12, 12, 20], [1, 1]), dtype)
    k = tf.cast(tf.random.stateless_normal([5, 5, 20, 50], [1, 2]), dtype)

    @tf.function
    def conv2_fwd_dx(h, k):
      with tf.GradientTape() as tape:
        tape.watch(h)
        y = tf.nn.conv2d(h, k, 1, "VALID")
        loss = tf.reduce_sum(y * y)
      return tape.gradient(loss, h)

    a = tf.cast(tf.random.stateless_uniform([64, 800], [2, 1]), dtype)
    w = tf.cast(tf.random.stateless_normal([800, 500], [2, 2]), dtype)
    for op, fn, args in (("conv2_fwd_dx", conv2_fwd_dx, (h, k)),
                         ("dense3_fwd", tf.function(lambda a, w: a @ w), (a, w))):
      print(json.dumps(dict(op=op, dtype=dtype.name, batch=64, ms=ms_per_call(fn, *args),
                            device=device())), flush=True)
  for units in (11520, 3200):
    h = tf.nn.relu(tf.random.stateless_normal([1000, units], [3, 1]))
    p = h / tf.reduce_sum(h, axis=1, keepdims=True)
    for name, fn in sap_draws(units).items():
      print(json.dumps(dict(op="sap_draw", variant=name, batch=1000, units=units,
                            ms=ms_per_call(tf.function(fn), p, reps=min(FLAGS.reps, 5)),
                            device=device())), flush=True)


if __name__ == "__main__":
  app.run(main)
