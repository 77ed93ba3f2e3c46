"""Shared pieces of the bench/ scripts: a measured compute peak, synthetic pruning, op times,
the --strategy flags."""

import collections
import glob
import os
import re
import time

import numpy as np
import tensorflow as tf
from tensorflow.tsl.profiler.protobuf import xplane_pb2


def define_strategy_flags(flags, runs_as):
  """--strategy and --cpu_replicas, timed as `runs_as` (a main.py command line) runs them."""
  flags.DEFINE_enum("strategy", "default", ["default", "cpu_split"], "default: one device; "
                    f"cpu_split: as {runs_as} --strategy=cpu_split.")
  flags.DEFINE_integer("cpu_replicas", 2, "Replicas of --strategy=cpu_split.")


def strategy_from_flags(flags):
  """The cpu_split strategy, or None (one device); call before any TF work."""
  from anp.training import distribute  # pylint: disable=g-import-not-at-top
  if flags.strategy != "cpu_split":
    return None
  return distribute.cpu_split_strategy(flags.cpu_replicas)


def _best_gflops(fn, flops, reps):
  fn().numpy()  # trace + warm up
  best = float("inf")
  for _ in range(reps):
    start = time.perf_counter()
    fn().numpy()
    best = min(best, time.perf_counter() - start)
  return flops / best / 1e9


def peak_gflops(reps=5):
  """The best float32 GFLOP/s this machine reaches on large dense work, best of several shapes.

  A single 2048^2 matmul under-reads the peak of small-kernel convolutions (VGG-16 steps ran
  above it), so large batched 3x3 convolutions are timed too. Returns {'matmul', 'conv',
  'peak'} where peak is the larger: the denominator of the benches' efficiency ratios.
  """
  out = {}
  mm = 0.0
  for n in (1024, 2048):
    a = tf.random.normal([n, n])
    mm = max(mm, _best_gflops(tf.function(lambda a=a: tf.matmul(a, a)), 2 * n ** 3, reps))
  out["matmul"] = mm
  conv = 0.0
  for batch, size, ch in ((32, 32, 256), (64, 16, 512)):
    x = tf.random.normal([batch, size, size, ch])
    k = tf.random.normal([3, 3, ch, ch]) * 0.01
    flops = 2 * batch * size * size * ch * ch * 9
    conv = max(conv, _best_gflops(tf.function(lambda x=x, k=k: tf.nn.conv2d(x, k, 1, "SAME")),
                                  flops, reps))
  out["conv"] = conv
  out["peak"] = max(mm, conv)
  return {k: round(v, 1) for k, v in out.items()}


def prune_at_random(net, fraction, seed=0):
  """Prunes about `fraction` of the units of every mask site of a built masked net (a_uc = -10,
  E[pi] ~ 1e-4 < thres); the others get a_uc = 2 (E[pi] ~ 0.7). Keeps >= 1 unit per site."""
  rng = np.random.default_rng(seed)
  for mask in net.masks:
    a_uc = np.full(mask.units, 2.0, np.float32)
    pruned = rng.random(mask.units) < fraction
    pruned[rng.integers(mask.units)] = False
    a_uc[pruned] = -10.0
    mask.a_uc.assign(a_uc)
  return net


def device():
  return "gpu" if tf.config.list_physical_devices("GPU") else "cpu"


def op_times(logdir):
  """{(op, kernel): [total_us, count]} over the executor threads of the host plane."""
  space = xplane_pb2.XSpace()
  with open(glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True)[-1], "rb") as f:
    space.ParseFromString(f.read())
  out = collections.defaultdict(lambda: [0.0, 0])
  for plane in space.planes:
    for line in plane.lines:
      if not line.name.startswith("tf_Compute") and "inter" not in line.name.lower():
        continue
      for event in line.events:
        name = plane.event_metadata[event.metadata_id].name
        if ":" not in name or "::" in name:  # executor bookkeeping, not an op
          continue
        op, kernel = name.rsplit(":", 1)
        op = re.sub(r"(while/body/_\d+/|while/|gradient_tape/|le_net5(_\d+)?/)", "", op)
        out[(op, kernel)][0] += event.duration_ps / 1e6
        out[(op, kernel)][1] += 1
  return out
