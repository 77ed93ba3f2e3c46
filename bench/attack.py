"""Speed of the evaluation attacks: images/s of PGD-40 and APGD-CE-100 per model.

  python bench/attack.py [--models=lenet,vgg] [--attacks=pgd,apgd-ce] [--reps=3]
                         [--vgg_reps=1] [--lenet_batch=256] [--vgg_batch=64]

Prints one JSON object per (model, attack): model, attack, steps, batch, images_per_s,
ms_per_batch, reps, device. The timed function is the evaluation step of --mode=eval
(`anp.evaluate.make_eval_step`: the attack loop, then the clean and adversarial passes with
their latent features), compiled once as a tf.function, on a randomly initialised masked
LeNet5 (MNIST shapes) or VGG-16 (CIFAR-10 shapes) fed random images. The trace is built
before timing; the median over the repetitions is reported. On 2 CPU cores the default run
takes about 3 minutes, most of it VGG-16.
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

from anp.config import Config  # noqa: E402
from anp.data import dataset_info  # noqa: E402
from anp.evaluate import AttackSpec, make_attack, make_eval_step  # noqa: E402
from anp.runs import build_net  # noqa: E402

flags.DEFINE_list("models", ["lenet", "vgg"], "Models: lenet (MNIST shapes), vgg (CIFAR-10).")
flags.DEFINE_list("attacks", ["pgd", "apgd-ce"], "Attacks: pgd, apgd-ce, apgd-dlr, cw, fgsm.")
flags.DEFINE_integer("reps", 3, "Timed batches per attack for LeNet.", lower_bound=1)
flags.DEFINE_integer("vgg_reps", 1, "Timed batches per attack for VGG-16.", lower_bound=1)
flags.DEFINE_integer("lenet_batch", 256, "LeNet batch size.", lower_bound=1)
flags.DEFINE_integer("vgg_batch", 64, "VGG-16 batch size.", lower_bound=1)
flags.DEFINE_integer("pgd_steps", 40, "PGD (and CW) iterations.", lower_bound=1)
flags.DEFINE_integer("apgd_steps", 100, "APGD iterations.", lower_bound=1)
FLAGS = flags.FLAGS

DATASETS = {"lenet": "mnist", "vgg": "cifar10"}


def bench(model, attack, batch, reps):
  cfg = Config(dataset=DATASETS[model], method="anp_vs").resolved()
  info = dataset_info(cfg.dataset)
  tf.random.set_seed(0)
  net = build_net(cfg)
  steps = FLAGS.apgd_steps if attack.startswith("apgd") else FLAGS.pgd_steps
  spec = AttackSpec(attack, eps=cfg.eps, step_size=cfg.step_size, steps=steps)
  step = make_eval_step(net, [(attack, make_attack(spec))])
  x = tf.random.uniform((batch,) + info.image_shape)
  y = tf.random.uniform([batch], 0, info.n_classes, tf.int32)
  step.get_concrete_function(x, y)  # trace outside the timing
  times = []
  for _ in range(reps):
    start = time.perf_counter()
    out = step(x, y)
    out["adv"].numpy()
    times.append(time.perf_counter() - start)
  ms = 1000 * float(np.median(times))
  return dict(model=f"{model}/{cfg.dataset}", attack=attack,
              steps=1 if attack == "fgsm" else steps, batch=batch,
              images_per_s=batch / ms * 1000, ms_per_batch=ms, reps=reps,
              device="gpu" if tf.config.list_physical_devices("GPU") else "cpu")


def main(_):
  for model in FLAGS.models:
    if model not in DATASETS:
      raise app.UsageError(f"--models: unknown model {model!r}; expected lenet or vgg.")
    batch = FLAGS.vgg_batch if model == "vgg" else FLAGS.lenet_batch
    reps = FLAGS.vgg_reps if model == "vgg" else FLAGS.reps
    for attack in FLAGS.attacks:
      print(json.dumps(bench(model, attack, batch, reps)), flush=True)


if __name__ == "__main__":
  app.run(main)
