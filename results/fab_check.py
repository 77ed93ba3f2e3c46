"""What FAB-T adds to AutoAttack on trained runs: the standard cascade, stage by stage.

  python results/fab_check.py --runs=results/mnist/anp_vs,results/mnist/at \
      --data_dir=../shared/data [--examples=1000] [--eps=0.3] [--steps=100] [--targets=9] \
      [--square_queries=5000] [--batch=1000] [--seed=0] [--out_dir=results/mnist/fab_check]

Per run directory (loaded as --mode=eval loads it, `anp.runs.loading.load_model`), on the first
--examples test images (float [0, 1] NHWC, as --mode=eval feeds them), at L-inf radius --eps
in the box [0, 1], the stages of `attacks.autoattack.stages('standard', ...)` run as the
cascade runs them (`on_still_robust`, each stage only on the examples every earlier one failed
on; examples misclassified clean are not attacked):

  APGD-CE  --steps iterations;
  APGD-T   --targets runner-up classes x --steps iterations;
  FAB-T    targeted L-inf FAB towards the same --targets classes, --steps iterations, one run
           per target (eta 1.05, beta 0.9, alpha_max 0.1);
  Square   --square_queries queries (0: not run).

Gradients and queries come from the network without its pruned units (`net.attack_fn()`,
--mode=eval's default --compact_attack) and every stage judges its examples by that function,
as the cascade in --mode=eval does; the final points are also judged by the network itself
(`robust_by_net`). Each stage is compiled once per run (on 8 examples) before it is timed.
Output: one JSON object per run on stdout (robust counts after each stage, the examples each
stage fooled of those it attacked, wall seconds per stage and FAB-T's seconds per 1000 images
of the evaluated set, the largest L-inf distance of the final points and whether any left the
box, the machine's 1-minute load average before and after); with --out_dir, `fab_check.json`
(all runs) and `fab_check.md` (a table), each written whole (a temporary file, then
os.replace).
"""

import json
import os
import platform
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

import attacks  # noqa: E402
from anp import data  # noqa: E402
from anp.evaluation.attack_specs import clip_range  # noqa: E402
from anp.config import Config  # noqa: E402
from anp.runs.loading import load_model  # noqa: E402
from attacks.autoattack import stages  # noqa: E402

FLAGS = flags.FLAGS
JSON_NAME, MD_NAME = "fab_check.json", "fab_check.md"
LABELS = {"apgd-ce": "APGD-CE", "apgd-t": "APGD-T", "fab-t": "FAB-T", "square": "Square"}


def define_flags():
  """The script's flags, defined only when it runs as a script (main.py's share names)."""
  flags.DEFINE_list("runs", ["results/mnist/anp_vs", "results/mnist/at"],
                    "Run directories (or checkpoints / SavedModels --mode=eval accepts).")
  flags.DEFINE_string("data_dir", None, "Folder of the data set files (as main.py).")
  flags.DEFINE_integer("examples", 1000, "First test images attacked.", lower_bound=1)
  flags.DEFINE_float("eps", 0.3, "L-inf radius.", lower_bound=0.0)
  flags.DEFINE_integer("steps", 100, "APGD and FAB-T iterations.", lower_bound=1)
  flags.DEFINE_integer("targets", 9, "Target classes of APGD-T and FAB-T.", lower_bound=1)
  flags.DEFINE_integer("square_queries", 5000, "Square's queries; 0: Square is not run.",
                       lower_bound=0)
  flags.DEFINE_integer("batch", 1000, "Images per compiled call (--eval_batch).",
                       lower_bound=1)
  flags.DEFINE_integer("seed", 0, "Seed of the cascade's random starts.")
  flags.DEFINE_string("out_dir", None, "Folder for fab_check.json and fab_check.md.")


def cascade(craft, x, y, *, eps, steps, targets, queries, seed, batch, clip, verbose=True,
            label="model"):
  """Runs the standard cascade's stages on (x, y) in batches; returns (x_adv, robust [N] after
  each stage {name: bool array}, seconds {name: float}, clean bool array)."""
  named = stages("standard", eps, steps=steps, targets=targets, queries=max(queries, 1),
                 clip_min=clip[0], clip_max=clip[1], seed=seed)
  if queries == 0:
    named = [(n, a) for n, a in named if n != "square"]
  img = tf.TensorSpec([None, *x.shape[1:]], tf.float32)
  signature = [img, tf.TensorSpec([None], tf.int64), img, tf.TensorSpec([None], tf.bool)]
  compiled = {name: tf.function(
      lambda xs, ys, x_adv, robust, attack=attack: attacks.on_still_robust(
          attack, craft, xs, ys, x_adv, robust), input_signature=signature)
              for name, attack in named}
  clean = np.concatenate([attacks.correct(craft, x[i:i + batch], y[i:i + batch]).numpy()
                          for i in range(0, len(x), batch)])
  for name, _ in named:  # compile outside the timing
    compiled[name](x[:8], y[:8], x[:8], tf.constant(clean[:8]))
  x_adv, robust = x.copy(), clean.copy()
  after, seconds = {}, {}
  for name, _ in named:
    start = time.perf_counter()
    for i in range(0, len(x), batch):
      xa, rb = compiled[name](x[i:i + batch], y[i:i + batch], x_adv[i:i + batch],
                              robust[i:i + batch])
      x_adv[i:i + batch], robust[i:i + batch] = xa.numpy(), rb.numpy()
    seconds[name] = time.perf_counter() - start
    after[name] = robust.copy()
    if verbose:
      print(json.dumps(dict(run=label, stage=name, robust=int(robust.sum()),
                            seconds=round(seconds[name], 2))), flush=True)
  return x_adv, after, seconds, clean


def check_run(path, data_dir=None, *, examples=1000, eps=0.3, steps=100, targets=9,
              square_queries=5000, batch=1000, seed=0, verbose=True):
  """The result dict of one run directory."""
  load_before = os.getloadavg()[0]
  net, run_cfg, _ = load_model(path, Config(dataset="mnist").resolved())
  x, y = data.eval_images(run_cfg.dataset, data_dir, examples, run_cfg.preprocess)
  craft = net.attack_fn() if hasattr(net, "attack_fn") else (
      lambda t: net(t, training=False))
  clip = clip_range(run_cfg.preprocess)
  x_adv, after, seconds, clean = cascade(
      craft, x, y, eps=eps, steps=steps, targets=targets, queries=square_queries, seed=seed,
      batch=batch, clip=clip, verbose=verbose, label=path)
  names = list(after)
  robust = {name: int(after[name].sum()) for name in names}
  before = {name: int(clean.sum()) if k == 0 else robust[names[k - 1]]
            for k, name in enumerate(names)}
  by_net = np.concatenate([attacks.correct(lambda t: net(t, training=False),
                                           x_adv[i:i + batch], y[i:i + batch]).numpy()
                           for i in range(0, len(x), batch)])
  n = len(x)
  return dict(
      run=path, method=run_cfg.method, dataset=run_cfg.dataset, examples=n, eps=eps,
      steps=steps, targets=targets, square_queries=square_queries, seed=seed, batch=batch,
      clean=int(clean.sum()), robust_after=robust,
      fooled_by={name: before[name] - robust[name] for name in names},
      attacked_by={name: before[name] for name in names},
      robust_acc_after={name: robust[name] / n for name in names},
      robust_by_net=int(by_net.sum()),
      seconds={name: round(s, 2) for name, s in seconds.items()},
      fab_t_seconds_per_1000_images=round(seconds["fab-t"] * 1000 / n, 1),
      max_linf=float(np.max(np.abs(x_adv - x))),
      outside_box=bool(np.any(x_adv < clip[0]) or np.any(x_adv > clip[1])),
      crafted_on="net.attack_fn()" if hasattr(net, "attack_fn") else "net",
      machine=f"{platform.machine()}, {os.cpu_count()} CPU cores, TF {tf.__version__}",
      load_average_1min=[round(load_before, 2), round(os.getloadavg()[0], 2)])


def markdown(results):
  """A table: robust examples after each stage, FAB-T's and Square's own finds, FAB-T's time."""
  if not results:
    return ""
  r0 = results[0]
  names = list(r0["robust_after"])
  lines = [f"L-inf eps = {r0['eps']}, first {r0['examples']} test images, AutoAttack's "
           f"standard cascade ({r0['steps']} iterations, {r0['targets']} targets"
           + (f", Square {r0['square_queries']} queries" if "square" in names else "")
           + "); robust examples (of the images) after each stage, each stage run only on "
             "the examples the earlier ones left.", ""]
  header = (["Model", "Clean"] + [f"after {LABELS[n]}" for n in names]
            + ["fooled by FAB-T after APGD"]
            + (["fooled by Square after FAB-T"] if "square" in names else [])
            + ["FAB-T s / 1000 images", "FAB-T s (on the examples it attacked)"])
  lines += ["| " + " | ".join(header) + " |", "| --- " * len(header) + "|"]
  for r in results:
    cells = ([r["run"], str(r["clean"])] + [str(r["robust_after"][n]) for n in names]
             + [str(r["fooled_by"]["fab-t"])]
             + ([str(r["fooled_by"]["square"])] if "square" in names else [])
             + [f"{r['fab_t_seconds_per_1000_images']:.1f}",
                f"{r['seconds']['fab-t']:.1f} ({r['attacked_by']['fab-t']})"])
    lines.append("| " + " | ".join(cells) + " |")
  lines += ["", "Wall seconds per stage: " + "; ".join(
      f"{r['run']}: " + ", ".join(f"{LABELS[n]} {r['seconds'][n]:.1f}" for n in names)
      for r in results) + f". Machine: {r0['machine']}; 1-minute load average before / "
      "after each run: " + "; ".join(f"{r['load_average_1min'][0]} / {r['load_average_1min'][1]}"
                                    for r in results) + "."]
  return "\n".join(lines) + "\n"


def _write(path, text):
  with open(path + ".tmp", "w") as f:
    f.write(text)
  os.replace(path + ".tmp", path)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  results = []
  for path in FLAGS.runs:
    result = check_run(path, FLAGS.data_dir, examples=FLAGS.examples, eps=FLAGS.eps,
                       steps=FLAGS.steps, targets=FLAGS.targets,
                       square_queries=FLAGS.square_queries, batch=FLAGS.batch, seed=FLAGS.seed)
    results.append(result)
    print(json.dumps(result), flush=True)
  if FLAGS.out_dir:
    os.makedirs(FLAGS.out_dir, exist_ok=True)
    _write(os.path.join(FLAGS.out_dir, JSON_NAME), json.dumps(results, indent=2) + "\n")
    _write(os.path.join(FLAGS.out_dir, MD_NAME), markdown(results))


if __name__ == "__main__":
  define_flags()
  app.run(main)
