"""Speed of AutoAttack (`--attack=autoattack`) on trained runs, stage by stage, and its floor.

  python bench/autoattack.py --runs=results/mnist/anp_vs,results/mnist/at \
      --data_dir=../shared/data [--examples=1024] [--batch=1024] [--queries=5000] \
      [--throughput_only]

Prints one JSON object per run: per stage of the cascade (APGD-CE, APGD-T, FAB-T, Square) its
wall seconds and the robust fraction after it; the model's forward throughput (images/s, best of 5,
on the attack's crafting function: the compact network of a pruned run); and Square's floor,
the seconds its forward passes alone need: (examples robust when Square starts) x queries /
throughput. Square stops early only on the examples it fools, so on a robust model its time is
close to that product; `square_vs_floor` is the measured time over it. Likewise APGD-T's floor,
(examples robust when it starts) x 9 targets x 100 iterations / the throughput of a forward and
input-gradient pass of the CE loss (`gradient_images_per_s`), and `apgd_t_vs_floor`. With
--throughput_only, only the two throughputs (on the first batch). `minutes_per_10000`
extrapolates the whole cascade to the 10,000 MNIST test images. Each stage is compiled once
(a first call on a few examples) before it is timed. Run it on an otherwise idle machine.
"""

import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

import attacks  # noqa: E402
from anp import data  # noqa: E402
from anp.config import Config  # noqa: E402
from anp.runs.loading import load_model  # noqa: E402
from attacks.autoattack import on_still_robust, stages  # noqa: E402
from bench.common import device  # noqa: E402

flags.DEFINE_list("runs", ["results/mnist/anp_vs"], "Run directories (or SavedModels).")
flags.DEFINE_string("data_dir", None, "Folder of the real data (the runs' data set).")
flags.DEFINE_integer("examples", 1024, "First test examples attacked.", lower_bound=1)
flags.DEFINE_integer("batch", 1024, "Examples per compiled call (--eval_batch).", lower_bound=1)
flags.DEFINE_integer("queries", 5000, "Square's queries.", lower_bound=1)
flags.DEFINE_float("eps", None, "L-inf radius (default: the data set's).")
flags.DEFINE_bool("throughput_only", False,
                  "Print only the forward and gradient throughputs (no attack).")
FLAGS = flags.FLAGS
STEPS, TARGETS = 100, 9  # AutoAttack's iterations and target classes


def forward_throughput(fn, x, reps=5):
  call = tf.function(fn)
  call(x).numpy()
  best = min(_timed(lambda: call(x).numpy()) for _ in range(reps))
  return len(x) / best


def gradient_throughput(fn, x, y, reps=5):
  """Images/s of one forward and input-gradient pass of the CE loss (an APGD step's model
  cost), best of `reps`."""
  def step(x):
    with tf.GradientTape() as tape:
      tape.watch(x)
      loss = tf.nn.sparse_softmax_cross_entropy_with_logits(y, fn(x))
    return tape.gradient(loss, x)

  return forward_throughput(step, x, reps)


def _timed(thunk):
  start = time.perf_counter()
  thunk()
  return time.perf_counter() - start


def bench_run(path):
  net, run_cfg, _ = load_model(path, Config(data_dir=FLAGS.data_dir).resolved())
  cfg = Config(dataset=run_cfg.dataset, preprocess=run_cfg.preprocess).resolved()
  eps = FLAGS.eps if FLAGS.eps is not None else cfg.eps
  _, _, x_te, y_te = data.load_arrays(cfg.dataset, FLAGS.data_dir, test_only=True)
  ds = data.make_dataset(x_te[:FLAGS.examples], y_te[:FLAGS.examples], FLAGS.batch,
                         training=False, preprocess=cfg.preprocess)
  batches = list(ds)
  craft = net.attack_fn() if hasattr(net, "attack_fn") else (
      lambda t: net(t, training=False))
  x0, y0 = batches[0]
  throughput = forward_throughput(craft, x0)
  gradients = gradient_throughput(craft, x0, y0)
  if FLAGS.throughput_only:
    return dict(run=path, batch=int(x0.shape[0]), forward_images_per_s=round(throughput),
                gradient_images_per_s=round(gradients), device=device())
  named = stages("standard", eps, steps=STEPS, targets=TARGETS, queries=FLAGS.queries)
  spec = [tf.TensorSpec([None, *x0.shape[1:]], x0.dtype), tf.TensorSpec([None], y0.dtype),
          tf.TensorSpec([None, *x0.shape[1:]], x0.dtype), tf.TensorSpec([None], tf.bool)]
  steps = {}
  for name, attack in named:  # one trace for every batch size
    steps[name] = tf.function(
        lambda x, y, x_adv, robust, attack=attack: on_still_robust(
            attack, craft, x, y, x_adv, robust, replace_all=False), input_signature=spec)
  seconds = {name: 0.0 for name, _ in named}
  robust_after = {name: 0 for name, _ in named}
  square_start = apgd_t_start = 0
  for x, y in batches:
    robust = attacks.correct(craft, x, y)
    x_adv = x
    for name, _ in named:
      if x is x0:
        steps[name](x[:8], y[:8], x[:8], robust[:8])  # compile outside the timing
      still = int(tf.reduce_sum(tf.cast(robust, tf.int32)))
      square_start += still if name == "square" else 0
      apgd_t_start += still if name == "apgd-t" else 0
      start = time.perf_counter()
      x_adv, robust = steps[name](x, y, x_adv, robust)
      robust.numpy()
      seconds[name] += time.perf_counter() - start
      robust_after[name] += int(np.sum(robust.numpy()))
  n = sum(len(y) for _, y in batches)
  floor = square_start * FLAGS.queries / throughput
  apgd_t_floor = apgd_t_start * TARGETS * STEPS / gradients
  total = sum(seconds.values())
  return dict(run=path, examples=n, batch=FLAGS.batch, eps=eps, queries=FLAGS.queries,
              seconds={k: round(v, 2) for k, v in seconds.items()},
              robust_after={k: v / n for k, v in robust_after.items()},
              forward_images_per_s=round(throughput), gradient_images_per_s=round(gradients),
              apgd_t_floor_s=round(apgd_t_floor, 2),
              apgd_t_vs_floor=round(seconds["apgd-t"] / apgd_t_floor, 2) if apgd_t_floor else None,
              square_floor_s=round(floor, 2),
              square_vs_floor=round(seconds["square"] / floor, 2) if floor else None,
              minutes_per_10000=round(total / n * 10000 / 60, 1), device=device())


def main(argv):
  del argv
  for path in FLAGS.runs:
    print(json.dumps(bench_run(path)), flush=True)


if __name__ == "__main__":
  app.run(main)
