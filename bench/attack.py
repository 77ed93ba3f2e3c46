"""Speed of the evaluation attacks: images/s of PGD-40 and APGD-CE-100 per model.

  python bench/attack.py [--models=lenet,vgg] [--attacks=pgd,apgd-ce] [--reps=3]
                         [--vgg_reps=1] [--lenet_batch=256] [--vgg_batch=64]
                         [--sparsity=0,0.8] [--compact=false,true]
                         [--strategy=default|cpu_split]

Prints one JSON object per (model, attack, sparsity, compact): model, attack, steps, batch,
images_per_s, ms_per_batch, reps, device. The timed function is the evaluation step of
--mode=eval (`anp.evaluation.eval_net.make_eval_step`: the attack loop, then the clean and adversarial
passes with their latent features), compiled once as a tf.function, on a randomly initialised
masked LeNet5 (MNIST shapes) or VGG-16 (CIFAR-10 shapes) fed random images, with `sparsity`
of the units of every mask site pruned at random; `compact` crafts the attack on
`net.attack_fn()` (--compact_attack of --mode=eval). The trace is built before timing; the
median over the repetitions is reported. --strategy=cpu_split splits each batch over
--cpu_replicas single-threaded logical CPU devices as `main.py --mode=eval
--strategy=cpu_split` does (its own process: the CPU is configured before TF starts). On 2 CPU
cores the default run takes about 3
minutes, most of it VGG-16.
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
from anp.evaluation.attack_specs import AttackSpec, make_attack  # noqa: E402
from anp.config import Config  # noqa: E402
from anp.data import dataset_info  # noqa: E402
from anp.evaluation.eval_net import STEP_AXES, make_eval_step  # noqa: E402
from anp.runs.rundir import build_net  # noqa: E402
from bench.common import (  # noqa: E402
    define_strategy_flags, device, prune_at_random, strategy_from_flags)

flags.DEFINE_list("models", ["lenet", "vgg"], "Models: lenet (MNIST shapes), vgg (CIFAR-10).")
flags.DEFINE_list("attacks", ["pgd", "apgd-ce"], "Attacks: pgd, apgd-ce, apgd-dlr, cw, fgsm.")
flags.DEFINE_integer("reps", 3, "Timed batches per attack for LeNet.", lower_bound=1)
flags.DEFINE_integer("vgg_reps", 1, "Timed batches per attack for VGG-16.", lower_bound=1)
flags.DEFINE_integer("lenet_batch", 256, "LeNet batch size.", lower_bound=1)
flags.DEFINE_integer("vgg_batch", 64, "VGG-16 batch size.", lower_bound=1)
flags.DEFINE_integer("pgd_steps", 40, "PGD (and CW) iterations.", lower_bound=1)
flags.DEFINE_integer("apgd_steps", 100, "APGD iterations.", lower_bound=1)
flags.DEFINE_list("sparsity", ["0"], "Fractions of units pruned at random per mask site.")
flags.DEFINE_list("compact", ["true"], "Values of --compact_attack to time: true, false.")
define_strategy_flags(flags, "main.py --mode=eval")
FLAGS = flags.FLAGS

DATASETS = {"lenet": "mnist", "vgg": "cifar10"}


def bench(model, attack, batch, reps, sparsity, compact, strategy):
  cfg = Config(dataset=DATASETS[model], method="anp_vs").resolved()
  info = dataset_info(cfg.dataset)
  tf.random.set_seed(0)
  net = prune_at_random(build_net(cfg), sparsity)
  steps = FLAGS.apgd_steps if attack.startswith("apgd") else FLAGS.pgd_steps
  spec = AttackSpec(attack, eps=cfg.eps, step_size=cfg.step_size, steps=steps)
  step = distribute.per_example_step(
      strategy, make_eval_step(net, [(attack, make_attack(spec))], compact=compact), STEP_AXES)
  x = tf.random.uniform((batch,) + info.image_shape)
  y = tf.random.uniform([batch], 0, info.n_classes, tf.int32)
  step(x, y)["adv"].numpy()  # trace and warm up outside the timing
  times = []
  for _ in range(reps):
    start = time.perf_counter()
    out = step(x, y)
    out["adv"].numpy()
    times.append(time.perf_counter() - start)
  ms = 1000 * float(np.median(times))
  return dict(model=f"{model}/{cfg.dataset}", attack=attack,
              steps=1 if attack == "fgsm" else steps, batch=batch, strategy=FLAGS.strategy,
              sparsity=round(net.sparsity(), 4), compact_attack=compact,
              images_per_s=round(batch / ms * 1000, 1), ms_per_batch=round(ms, 1), reps=reps,
              device=device())


def main(_):
  strategy = strategy_from_flags(FLAGS)  # before any TF work
  for model in FLAGS.models:
    if model not in DATASETS:
      raise app.UsageError(f"--models: unknown model {model!r}; expected lenet or vgg.")
    batch = FLAGS.vgg_batch if model == "vgg" else FLAGS.lenet_batch
    reps = FLAGS.vgg_reps if model == "vgg" else FLAGS.reps
    for attack in FLAGS.attacks:
      for sparsity in map(float, FLAGS.sparsity):
        for compact in FLAGS.compact:
          print(json.dumps(bench(model, attack, batch, reps, sparsity,
                                 compact.lower() == "true", strategy)), flush=True)


if __name__ == "__main__":
  app.run(main)
