"""Speed of the ANP-VS train step: images/s, ms/step and model GFLOP/s against a measured peak.

  python bench/train_step.py [--models=lenet,vgg] [--sparsity=0,0.8] [--compact=false,true]
                             [--steps=20] [--vgg_steps=3] [--model_dir=RUN]
                             [--method=anp_vs|anp|at|at_bnn] [--strategy=default|cpu_split]
                             [--train_attack_dtype=bfloat16]

Prints one JSON object for the machine's peak, then one per configuration (model x sparsity x
compact attack). The step is the compiled `AdversarialTrainer.train_step` (PGD on the
inference-mode net, then the clean and adversarial training passes and both optimizer
updates) on synthetic data of the dataset's shape, median of the timed steps.
--method=at_bnn times Adv-BNN's step (a new weight sample per PGD step; its work is counted
as the deterministic network's).

Sparsity: the fraction of units of every mask site pruned at random (`bench.common`), or with
--model_dir the weights and masks of a real run (LeNet). `compact` crafts PGD on
`net.attack_fn()` (pruned units removed, masks folded; LeNet's has fast conv1 and pooling
gradients), `false` through the masked layers as before.

--strategy=cpu_split times the step as `main.py --strategy=cpu_split` runs it (the CPU as
--cpu_replicas single-threaded logical devices under MirroredStrategy, `anp.training.distribute`); run
it in its own process (the CPU is configured before TF starts). --train_attack_dtype=bfloat16
times the step with the training attack in bfloat16 (`main.py --train_attack_dtype`).

Work per step is counted as batch * F * (2 * attack_steps + 4 * 2), F the forward FLOPs of one
image of the unpruned net: each PGD step is a forward and a backward pass to the input (~2F),
each of the two training passes a forward pass and two backward passes (~4F). gflops_per_s
is that dense-equivalent work per second; peak_ratio divides it by the measured peak, so the
figure carries across machines (above 1 means pruned units were skipped).
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

from anp.training import distribute  # noqa: E402
from anp.config import Config  # noqa: E402
from anp.data import dataset_info  # noqa: E402
from anp.deploy.efficiency import forward_flops  # noqa: E402
from anp.runs.rundir import build_net, restore_net  # noqa: E402
from anp.training.train import make_trainer  # noqa: E402
from bench.common import (  # noqa: E402
    define_strategy_flags, device, peak_gflops, prune_at_random, strategy_from_flags)

flags.DEFINE_list("models", ["lenet", "vgg"], "Configurations to run: lenet, vgg.")
flags.DEFINE_list("sparsity", ["0"], "Fractions of units pruned at random per mask site.")
flags.DEFINE_list("compact", ["true"], "Values of compact_attack to time: true, false.")
flags.DEFINE_string("model_dir", None, "Time LeNet with the weights and masks of this run.")
flags.DEFINE_integer("steps", 20, "Timed steps for LeNet.")
flags.DEFINE_integer("vgg_steps", 3, "Timed steps for VGG-16.")
flags.DEFINE_boolean("jit_compile", False, "Compile the step with XLA.")
flags.DEFINE_enum("method", "anp_vs", ["anp_vs", "anp", "at", "at_bnn"], "The trainer's method.")
flags.DEFINE_enum("train_attack_dtype", "float32", ["float32", "bfloat16"],
                  "Type of the training attack's passes (LeNet's compact attack).")
flags.DEFINE_float("peak", None, "Use this GFLOP/s peak instead of measuring it (under "
                   "cpu_split the process runs one thread per op: pass the default run's).")
flags.DEFINE_boolean("stock_ops", False,
                     "LeNet's attack_fn with TF's own conv1 and max-pool gradients instead of "
                     "models/ops.py (to measure what those save).")
define_strategy_flags(flags, "main.py")
FLAGS = flags.FLAGS

CONFIGS = {"lenet": dict(dataset="mnist", attack_steps=20),
           "vgg": dict(dataset="cifar10", attack_steps=10)}


def bench(name, steps, peak, sparsity, compact, strategy):
  spec = CONFIGS[name]
  cfg = Config(dataset=spec["dataset"], method=FLAGS.method, batch_size=64,
               train_attack_steps=spec["attack_steps"], jit_compile=FLAGS.jit_compile,
               compact_attack=compact,
               train_attack_dtype=FLAGS.train_attack_dtype if name == "lenet" else "float32"
               ).resolved()
  info = dataset_info(cfg.dataset)
  tf.random.set_seed(0)
  dense = build_net(cfg)  # unpruned: the work is counted on it
  with distribute.scope(strategy):
    net = build_net(cfg)
    if FLAGS.model_dir and name == "lenet":
      restore_net(net, FLAGS.model_dir, "--model_dir")
    elif net.masks:
      prune_at_random(net, sparsity)
    trainer = make_trainer(net, cfg, info.n_train, total_steps=10_000)
  x = tf.random.uniform((cfg.batch_size,) + info.image_shape)
  y = tf.random.uniform([cfg.batch_size], 0, info.n_classes, tf.int32)
  step = distribute.train_step(strategy, trainer, cfg.jit_compile)
  for _ in range(2):  # trace + warm up
    logs = step((x, y))
  float(logs["loss"])
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    float(step((x, y))["loss"])
    times.append(time.perf_counter() - start)
  ms = 1000 * float(np.median(times))
  flops_per_image = forward_flops(lambda t: dense(t, training=False), info.image_shape)
  work = cfg.batch_size * flops_per_image * (2 * cfg.train_attack_steps + 4 * 2)
  return dict(model=f"{name}/{cfg.dataset}", method=cfg.method, strategy=FLAGS.strategy,
              batch=cfg.batch_size, train_attack_dtype=cfg.train_attack_dtype,
              attack_steps=cfg.train_attack_steps, compact_attack=compact,
              sparsity=round(net.sparsity(), 4), units_kept=net.n_active(),
              images_per_s=round(cfg.batch_size / ms * 1000, 1), ms_per_step=round(ms, 2),
              forward_mflops_per_image=round(flops_per_image / 1e6, 3),
              gflops_per_s=round(work / ms / 1e6, 1), peak_gflops_per_s=peak,
              peak_ratio=round(work / ms / 1e6 / peak, 3), jit_compile=cfg.jit_compile,
              stock_ops=FLAGS.stock_ops,
              device=device())


def use_stock_ops():
  import models.lenet  # pylint: disable=g-import-not-at-top
  models.lenet.conv2d_one_channel = lambda x, k: tf.nn.conv2d(x, k, 1, "VALID")
  models.lenet.max_pool_2x2 = lambda x: tf.nn.max_pool2d(x, 2, 2, "VALID")


def main(_):
  strategy = strategy_from_flags(FLAGS)  # before any TF work
  if FLAGS.stock_ops:
    use_stock_ops()
  peak = dict(peak=FLAGS.peak, given=True) if FLAGS.peak else peak_gflops()
  print(json.dumps(dict(peak_gflops=peak, device=device())), flush=True)
  for name in FLAGS.models:
    steps = FLAGS.vgg_steps if name == "vgg" else FLAGS.steps
    for sparsity in map(float, FLAGS.sparsity):
      for compact in FLAGS.compact:
        print(json.dumps(bench(name, steps, peak["peak"], sparsity,
                               compact.lower() == "true", strategy)), flush=True)


if __name__ == "__main__":
  app.run(main)
