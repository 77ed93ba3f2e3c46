"""Speed of the ANP-VS train step: images/s, ms/step and achieved GFLOP/s vs a matmul peak.

  python bench/train_step.py [--models=lenet,vgg] [--steps=20] [--vgg_steps=3]

Prints one JSON object per configuration. The step is the Keras train function of
`AdversarialTrainer` (PGD on the inference-mode net, then the clean and adversarial
training passes and both optimizer updates), fed synthetic data of the dataset's shape.
Work per step is counted as batch * F * (2 * attack_steps + 4 * 2), with F the forward
FLOPs of one image measured from the model graph: each PGD step is a forward pass and
a backward pass to the input (~2F); each of the two training passes is a forward pass
and two backward passes (one per loss, weights and masks) with weight gradients (~4F).
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
from anp.efficiency import forward_flops  # noqa: E402
from anp.runs import build_net  # noqa: E402
from anp.train import make_trainer  # noqa: E402

flags.DEFINE_list("models", ["lenet", "vgg"], "Configurations to run: lenet, vgg.")
flags.DEFINE_integer("steps", 20, "Timed steps for LeNet.")
flags.DEFINE_integer("vgg_steps", 3, "Timed steps for VGG-16.")
flags.DEFINE_boolean("jit_compile", False, "Compile the step with XLA.")
FLAGS = flags.FLAGS

CONFIGS = {"lenet": dict(dataset="mnist", attack_steps=20),
           "vgg": dict(dataset="cifar10", attack_steps=10)}


def matmul_peak_gflops(n=2048, reps=10):
  a = tf.random.normal([n, n])
  mm = tf.function(lambda: tf.matmul(a, a))
  mm().numpy()
  start = time.perf_counter()
  for _ in range(reps):
    out = mm()
  out.numpy()
  return 2 * n ** 3 * reps / (time.perf_counter() - start) / 1e9


def bench(name, steps, peak):
  spec = CONFIGS[name]
  cfg = Config(dataset=spec["dataset"], method="anp_vs", batch_size=64,
               train_attack_steps=spec["attack_steps"], jit_compile=FLAGS.jit_compile).resolved()
  info = dataset_info(cfg.dataset)
  net = build_net(cfg)
  trainer = make_trainer(net, cfg, info.n_train, total_steps=10_000)
  x = tf.random.uniform((cfg.batch_size,) + info.image_shape)
  y = tf.random.uniform([cfg.batch_size], 0, info.n_classes, tf.int32)
  step = tf.function(trainer.train_step, jit_compile=cfg.jit_compile)
  for _ in range(2):  # trace + warm up
    logs = step((x, y))
  float(logs["loss"])
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    float(step((x, y))["loss"])
    times.append(time.perf_counter() - start)
  ms = 1000 * float(np.median(times))
  flops_per_image = forward_flops(lambda t: net(t, training=False), info.image_shape)
  work = cfg.batch_size * flops_per_image * (2 * cfg.train_attack_steps + 4 * 2)
  return dict(model=f"{name}/{cfg.dataset}", batch=cfg.batch_size,
              attack_steps=cfg.train_attack_steps, images_per_s=cfg.batch_size / ms * 1000,
              ms_per_step=ms, forward_mflops_per_image=flops_per_image / 1e6,
              gflops_per_s=work / ms / 1e6, peak_gflops_per_s=peak,
              jit_compile=cfg.jit_compile, device="cpu" if not tf.config.list_physical_devices("GPU") else "gpu")


def main(_):
  peak = matmul_peak_gflops()
  for name in FLAGS.models:
    steps = FLAGS.vgg_steps if name == "vgg" else FLAGS.steps
    print(json.dumps(bench(name, steps, peak)), flush=True)


if __name__ == "__main__":
  app.run(main)
