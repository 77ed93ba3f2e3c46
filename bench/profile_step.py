"""Where the milliseconds of the LeNet ANP-VS train step go: a per-op CPU profile.

  python bench/profile_step.py [--sparsity=0] [--compact=true] [--part=step|attack] [--top=25]

Runs the compiled train step (or only its PGD attack) of `bench/train_step.py`'s setup under
the TF profiler and prints one JSON object per op, largest first: the op (its name in the
graph without the loop prefixes, and its kernel), calls per step, and milliseconds per step
summed over the executor threads (`cpu_ms`; with two threads busy the wall time is about
half of the total). A last object gives the wall time per step and the sum of all op times.
"""

import json
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

from anp.config import Config  # noqa: E402
from anp.runs.rundir import build_net  # noqa: E402
from anp.training.train import make_trainer  # noqa: E402
from bench.common import op_times, prune_at_random  # noqa: E402

flags.DEFINE_float("sparsity", 0.0, "Fraction of units pruned at random per mask site.")
flags.DEFINE_boolean("compact", True, "compact_attack of the trainer.")
flags.DEFINE_enum("part", "step", ["step", "attack"], "The whole train step, or PGD only.")
flags.DEFINE_integer("steps", 3, "Profiled calls.")
flags.DEFINE_integer("top", 25, "Ops printed.")
FLAGS = flags.FLAGS


def main(_):
  cfg = Config(dataset="mnist", method="anp_vs", compact_attack=FLAGS.compact).resolved()
  net = prune_at_random(build_net(cfg), FLAGS.sparsity)
  trainer = make_trainer(net, cfg, 60000, total_steps=10_000)
  x = tf.random.uniform([cfg.batch_size, 28, 28, 1])
  y = tf.random.uniform([cfg.batch_size], 0, 10, tf.int32)
  seed = tf.constant([1, 2], tf.int64)
  if FLAGS.part == "attack":
    fn = tf.function(lambda: trainer.make_adversarial(x, y, seed))
  else:
    fn = tf.function(lambda: trainer.train_step((x, y))["loss"])
  fn().numpy()
  fn().numpy()
  logdir = tempfile.mkdtemp()
  tf.profiler.experimental.start(logdir)
  start = time.perf_counter()
  for _ in range(FLAGS.steps):
    fn().numpy()
  wall = (time.perf_counter() - start) / FLAGS.steps
  tf.profiler.experimental.stop()
  times = op_times(logdir)
  ranked = sorted(times.items(), key=lambda kv: -kv[1][0])
  for (op, kernel), (us, n) in ranked[:FLAGS.top]:
    print(json.dumps(dict(op=op, kernel=kernel, calls_per_step=round(n / FLAGS.steps, 1),
                          cpu_ms=round(us / FLAGS.steps / 1000, 3))))
  print(json.dumps(dict(part=FLAGS.part, sparsity=round(net.sparsity(), 4),
                        compact_attack=FLAGS.compact, wall_ms_per_step=round(1000 * wall, 1),
                        cpu_ms_all_ops=round(sum(v[0] for v in times.values())
                                             / FLAGS.steps / 1000, 1))))


if __name__ == "__main__":
  app.run(main)
