"""How many EOT samples a gradient attack on SAP needs: the noise of the averaged gradient.

  python results/sap_eot.py --model_dir=results/mnist/standard --data_dir=../shared/data \
      [--examples=200] [--eps=0.1] [--reference=1000] [--ks=1,5,10,20,50,100] [--groups=5] \
      [--seed=0] [--out_dir=results/mnist/sap/eot]

The run (loaded as --mode=eval loads it) gets SAP after every latent activation
(`anp.evaluation.sap.SapNet`, --sap_frac 1, the gradient through SAP's sampling probabilities
and rescaling: --sap_gradient=full). On the first --examples test images, each moved to a
uniform random point of the L-inf ball of radius --eps (clipped to [0, 1]: where PGD and APGD
start), one SAP sample gives one gradient of the cross-entropy in the input. The reference is
the mean of --reference samples; a second, independent reference of as many samples gives the
agreement that the reference's own noise allows. For each k of --ks, --groups independent means
of k samples are compared with the reference: the fraction of pixels whose sign agrees (an
L-inf step of PGD or APGD moves each pixel by the sign of its gradient) and the cosine
similarity, averaged over images and groups (pixels where the reference is exactly 0 left out
of the sign agreement).
Output: a JSON object on stdout; with --out_dir, `sap_eot.json` and `sap_eot.md` (a table),
each written whole.
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

from anp import data  # noqa: E402
from anp.atomic import write_whole  # noqa: E402
from anp.config import Config  # noqa: E402
from anp.evaluation.sap import SapNet  # noqa: E402
from anp.runs.loading import load_model  # noqa: E402

FLAGS = flags.FLAGS


def define_flags():
  """The script's flags, defined only when it runs as a script (main.py's share names)."""
  flags.DEFINE_string("model_dir", "results/mnist/standard", "Run directory (as --mode=eval).")
  flags.DEFINE_string("data_dir", None, "Folder of the data set files (as main.py).")
  flags.DEFINE_integer("examples", 200, "First test images.", lower_bound=1)
  flags.DEFINE_float("eps", 0.1, "L-inf radius of the random starting points.", lower_bound=0.0)
  flags.DEFINE_integer("reference", 1000, "Samples of each reference gradient.", lower_bound=1)
  flags.DEFINE_list("ks", ["1", "5", "10", "20", "50", "100"], "EOT sample counts compared.")
  flags.DEFINE_integer("groups", 5, "Independent means per k.", lower_bound=1)
  flags.DEFINE_integer("seed", 0, "Seed of the starting points and of TensorFlow.")
  flags.DEFINE_string("out_dir", None, "Folder for sap_eot.json and sap_eot.md.")


def mean_gradient(grad, x, y, samples):
  """The mean of `samples` one-sample gradients grad(x, y), [N, ...] float64."""
  total = np.zeros(x.shape, np.float64)
  for _ in range(samples):
    total += grad(x, y).numpy()
  return total / samples


def agreement(g, ref):
  """(sign agreement, cosine) of gradients g and ref [N, ...], averaged over examples."""
  g, ref = g.reshape(len(g), -1), ref.reshape(len(ref), -1)
  counted = ref != 0
  signs = ((np.sign(g) == np.sign(ref)) & counted).sum(1) / np.maximum(counted.sum(1), 1)
  cosine = (g * ref).sum(1) / np.maximum(
      np.linalg.norm(g, axis=1) * np.linalg.norm(ref, axis=1), 1e-30)
  return float(signs.mean()), float(cosine.mean())


def measure():
  tf.random.set_seed(FLAGS.seed)
  net, run_cfg, _ = load_model(FLAGS.model_dir, Config(data_dir=FLAGS.data_dir).resolved())
  x, y = data.eval_images(run_cfg.dataset, FLAGS.data_dir, FLAGS.examples, run_cfg.preprocess)
  rng = np.random.RandomState(FLAGS.seed)
  x = np.clip(x + rng.uniform(-FLAGS.eps, FLAGS.eps, x.shape), 0, 1).astype(np.float32)
  x, y = tf.constant(x), tf.constant(y)
  sap_net = SapNet(net, 1.0, differentiable=True)

  @tf.function
  def grad(xb, yb):
    with tf.GradientTape() as tape:
      tape.watch(xb)
      loss = tf.nn.sparse_softmax_cross_entropy_with_logits(yb, sap_net(xb))
    return tape.gradient(loss, xb)

  ref = mean_gradient(grad, x, y, FLAGS.reference)
  second = mean_gradient(grad, x, y, FLAGS.reference)
  rows = []
  for k in map(int, FLAGS.ks):
    pairs = [agreement(mean_gradient(grad, x, y, k), ref) for _ in range(FLAGS.groups)]
    rows.append(dict(samples=k, sign_agreement=float(np.mean([p[0] for p in pairs])),
                     cosine=float(np.mean([p[1] for p in pairs]))))
  signs, cosine = agreement(second, ref)
  rows.append(dict(samples=FLAGS.reference, sign_agreement=signs, cosine=cosine,
                   note="a second reference"))
  return dict(model_dir=FLAGS.model_dir, examples=int(len(y)), eps=FLAGS.eps,
              sap_frac=1.0, sap_gradient="full", reference_samples=FLAGS.reference,
              groups=FLAGS.groups, seed=FLAGS.seed, rows=rows)


def markdown(result):
  lines = [f"EOT gradient of `{result['model_dir']}` with SAP (full gradient) against the mean "
           f"of {result['reference_samples']} samples, first {result['examples']} test images "
           f"at uniform random points of the eps {result['eps']} ball; mean of "
           f"{result['groups']} independent estimates per row.", "",
           "| EOT samples | sign agreement (%) | cosine |", "| --- | --- | --- |"]
  for row in result["rows"]:
    name = f"{row['samples']} ({row['note']})" if "note" in row else str(row["samples"])
    lines.append(f"| {name} | {100 * row['sign_agreement']:.2f} | {row['cosine']:.4f} |")
  return "\n".join(lines) + "\n"


def main(argv):
  del argv
  result = measure()
  print(json.dumps(result))
  if FLAGS.out_dir:
    os.makedirs(FLAGS.out_dir, exist_ok=True)
    write_whole(os.path.join(FLAGS.out_dir, "sap_eot.json"), json.dumps(result, indent=1) + "\n")
    write_whole(os.path.join(FLAGS.out_dir, "sap_eot.md"), markdown(result))


if __name__ == "__main__":
  define_flags()
  app.run(main)
