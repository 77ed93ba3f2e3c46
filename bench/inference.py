"""Inference speed of the dense (masked) vs the compact pruned SavedModel on this machine.

  python bench/inference.py --model_dir=RUN           # a trained masked run
  python bench/inference.py --arch=lenet --prune=0.8  # a synthetic net, 80% of units pruned
  python bench/inference.py --weight_prune=0.9315     # a synthetic HYDRA net, 93.15% of weights

Both models are exported as SavedModels (`serving_default`) and timed through the loaded
signature: latency at batch 1 (median of --calls calls) and throughput at batch 256, with the
SavedModel's size on disk. A weight-pruned net's compact model stores its kernels as their
non-zero entries (`anp.deploy.sparse`); it is also timed with dense kernels holding the zeros
("compact_dense_kernels"), and the same architecture unpruned ("unpruned": the masked layers of
"dense" recompute their top-k at every call). Prints one JSON object per model and one with the
speedups next to the FLOPs ratio; with
--profile, then the --top ops of each model's batch-256 call (milliseconds per call summed
over executor threads), which is where the compact model's time goes when its speed-up
falls short of its FLOPs ratio.
"""

import json
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

from anp.config import Config  # noqa: E402
from anp.deploy.efficiency import forward_flops  # noqa: E402
from anp.deploy.compact import compact_model, served_units  # noqa: E402
from anp.deploy.export import inference_model, save_for_serving  # noqa: E402
from anp.methods.hydra import score_variables  # noqa: E402
from anp.runs.rundir import build_net, load_run  # noqa: E402
from bench.common import op_times, prune_at_random  # noqa: E402
from models.lenet import LeNet5  # noqa: E402
from models.subnet import subnet_layers  # noqa: E402
from models.vgg import VGG  # noqa: E402

flags.DEFINE_string("model_dir", None, "A trained masked run; default: a synthetic net.")
flags.DEFINE_enum("arch", "lenet", ["lenet", "vgg"], "Synthetic net without --model_dir.")
flags.DEFINE_float("prune", 0.8, "Fraction of units the synthetic net prunes.")
flags.DEFINE_float("weight_prune", None, "A synthetic HYDRA net pruning this fraction of every "
                   "kernel's entries (random scores) instead.")
flags.DEFINE_integer("calls", 200, "Timed calls at batch 1.")
flags.DEFINE_integer("batches", 10, "Timed calls at batch 256.")
flags.DEFINE_boolean("profile", False, "Print the top ops of each model at batch 256.")
flags.DEFINE_integer("top", 12, "Ops printed per model with --profile.")
FLAGS = flags.FLAGS


def synthetic_net():
  shape = (28, 28, 1) if FLAGS.arch == "lenet" else (32, 32, 3)
  if FLAGS.weight_prune is not None:
    cfg = Config(dataset="mnist" if FLAGS.arch == "lenet" else "cifar10", method="hydra",
                 hydra_granularity="weight", prune_ratio=FLAGS.weight_prune).resolved()
    net = build_net(cfg)
    for v in score_variables(net):
      v.assign(tf.random.stateless_normal(v.shape, [len(v.path), 0]))
    return net, shape
  net = LeNet5() if FLAGS.arch == "lenet" else VGG()
  net(tf.zeros((1,) + shape))
  return prune_at_random(net, FLAGS.prune), shape


def size_kib(path):
  return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs) / 1024


def timed(fn, x, calls):
  fn(images=x)
  times = []
  for _ in range(calls):
    start = time.perf_counter()
    fn(images=x)["classes"].numpy()
    times.append(time.perf_counter() - start)
  return float(np.median(times))


def profile(fn, x, calls=5):
  """The --top ops of `calls` calls of fn(images=x): op, kernel, ms per call."""
  fn(images=x)
  logdir = tempfile.mkdtemp()
  tf.profiler.experimental.start(logdir)
  for _ in range(calls):
    fn(images=x)["classes"].numpy()
  tf.profiler.experimental.stop()
  ranked = sorted(op_times(logdir).items(), key=lambda kv: -kv[1][0])[:FLAGS.top]
  return [dict(op=op, kernel=kernel, ms_per_call=round(us / calls / 1000, 3))
          for (op, kernel), (us, _) in ranked]


def main(_):
  if FLAGS.model_dir:
    net, _ = load_run(FLAGS.model_dir)
    shape = (28, 28, 1) if isinstance(net, LeNet5) else (32, 32, 3)
  else:
    net, shape = synthetic_net()
  models = [("dense", inference_model(net, shape)), ("compact", compact_model(net))]
  if subnet_layers(net):  # the masked layers recompute their top-k: also the plain network
    models += [("compact_dense_kernels", compact_model(net, sparse=False)),
               ("unpruned", inference_model(build_net(Config(
                   dataset="mnist" if isinstance(net, LeNet5) else "cifar10",
                   method="standard").resolved()), shape))]
  out = tempfile.mkdtemp()
  results, profiles = {}, {}
  for name, model in models:
    path = save_for_serving(model, os.path.join(out, name), shape)
    fn = tf.saved_model.load(path).signatures["serving_default"]
    latency = timed(fn, tf.random.uniform((1,) + shape), FLAGS.calls)
    batch = timed(fn, tf.random.uniform((256,) + shape), FLAGS.batches)
    flops = forward_flops(lambda t, m=model: m(t, training=False), shape)
    results[name] = dict(model=name, latency_ms_batch1=1000 * latency,
                         images_per_s_batch256=256 / batch, mflops_per_image=flops / 1e6,
                         saved_model_kib=size_kib(path))
    print(json.dumps(results[name]), flush=True)
    if FLAGS.profile:
      profiles[name] = profile(fn, tf.random.uniform((256,) + shape))
  d, c = results["dense"], results["compact"]
  print(json.dumps(dict(
      units_kept=served_units(models[1][1]) if subnet_layers(net) else net.n_active(),
      units_total=list(net.unit_counts),
      latency_speedup=d["latency_ms_batch1"] / c["latency_ms_batch1"],
      throughput_speedup=c["images_per_s_batch256"] / d["images_per_s_batch256"],
      flops_ratio=d["mflops_per_image"] / c["mflops_per_image"],
      size_ratio=d["saved_model_kib"] / c["saved_model_kib"],
      **({"vs_unpruned": dict(
          latency_speedup=u["latency_ms_batch1"] / c["latency_ms_batch1"],
          throughput_speedup=c["images_per_s_batch256"] / u["images_per_s_batch256"],
          flops_ratio=u["mflops_per_image"] / c["mflops_per_image"],
          size_ratio=u["saved_model_kib"] / c["saved_model_kib"])}
         if (u := results.get("unpruned")) else {}))), flush=True)
  for name, ops in profiles.items():
    for op in ops:
      print(json.dumps(dict(model=name, **op)), flush=True)


if __name__ == "__main__":
  app.run(main)
