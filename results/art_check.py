"""Our APGD and Square attacks beside IBM ART's implementations: same models, images, budgets.

  python results/art_check.py --runs=results/mnist/anp_vs,results/mnist/at \
      --data_dir=../shared/data [--examples=1000] [--eps=0.3] [--apgd_steps=100] \
      [--square_queries=5000] [--p_init=0.8] [--square_rescale_schedule] [--seed=0] \
      [--out_dir=results/mnist/art_check]

Per run directory (loaded as --mode=eval loads it, `anp.runs.loading.load_model`), on the first
--examples test images (float [0, 1] NHWC, as `anp.data.make_dataset` feeds --mode=eval), at
L-inf radius --eps in the box [0, 1], it runs three attacks twice:

  ours  `attacks.apgd` with the CE and the DLR loss (--apgd_steps iterations, step size 2 eps
        at the start, one random start) and `attacks.square` (--square_queries queries,
        --p_init), each compiled as one tf.function per batch of --batch images;
  ART   `AutoProjectedGradientDescent` (norm=inf, loss_type='cross_entropy' and
        'difference_logits_ratio', max_iter=--apgd_steps, eps_step=2 eps as in the AutoAttack
        paper (ART's default is 0.1), nb_random_init=1, batch_size=--art_batch) and
        `SquareAttack` (norm=inf, max_iter=--square_queries, p_init=--p_init, nb_restarts=1),
        on a `TensorFlowV2Classifier` around the same Keras model (nb_classes=10,
        input_shape=(28, 28, 1), clip_values=(0, 1), loss_object a from-logits sparse
        cross-entropy; ART's APGD swaps in its own per-example CE or DLR loss).

Every adversarial batch is scored by the same model call (the logits of net(x, training=False)).
Output: one JSON object per attack on stdout as it finishes, then one per run: clean and robust
accuracies (fractions), `diff_points` (ours - ART, in points of accuracy), the worst case of
each library (an example counts as robust only if all three attacks of the library fail),
wall seconds of each attack (ours include their tf.function tracing), the largest L-inf
distance of each attack's images, whether any left the box, and `no_weaker` per attack (ours
<= ART + --tolerance points). With --out_dir: `art_check.json` (all runs) and `art_check.md`
(robust accuracy and wall-seconds tables), each written whole (a temporary file, then
os.replace).

Square's schedule of square sizes: ours is AutoAttack's (the area fraction halves after fixed
iteration counts made for 5000 queries), ART's always maps the published 10,000-query schedule
onto max_iter. The two agree in spirit at 5000 queries; at a few hundred queries ours keeps
large squares and is weaker than ART's, as expected (--square_rescale_schedule gives ours ART's
mapping).

ART (PyPI `adversarial-robustness-toolbox`, tested with 1.20.1) is an optional dependency of
this script only: `pip install adversarial-robustness-toolbox==1.20.1`. ART's attacks use
NumPy's global generator, seeded with --seed before each of them; ours take --seed + batch.

Time on 2 CPU cores (LeNet5-Caffe): the default run takes about 35 minutes per run directory
(so over an hour for the two), most of it Square: ART's evaluates the model three times per
iteration on all still-robust images, ours once; ART's APGD runs eagerly on batches of 32
(about 4 and 5 minutes per run for CE and DLR, ours under a minute each). --examples=50
--square_queries=200 takes about a minute for the two runs.
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
from anp.evaluation.attack_specs import clip_range  # noqa: E402
from anp.config import Config  # noqa: E402
from anp.runs.loading import load_model  # noqa: E402

FLAGS = flags.FLAGS

ATTACKS = ("apgd-ce", "apgd-dlr", "square")
LIBRARIES = ("ours", "art")
JSON_NAME, MD_NAME = "art_check.json", "art_check.md"


def define_flags():
  """The script's flags, defined only when it runs as a script: main.py's flags share names
  (data_dir, eps, seed, ...), and tests load both into one process."""
  flags.DEFINE_list("runs", ["results/mnist/anp_vs", "results/mnist/at"],
                    "Run directories (or checkpoints / SavedModels --mode=eval accepts).")
  flags.DEFINE_string("data_dir", None, "Folder of the data set files (as main.py).")
  flags.DEFINE_integer("examples", 1000, "First test images attacked.", lower_bound=1)
  flags.DEFINE_float("eps", 0.3, "L-inf radius.", lower_bound=0.0)
  flags.DEFINE_integer("apgd_steps", 100, "APGD iterations (both losses, both libraries).",
                       lower_bound=1)
  flags.DEFINE_integer("square_queries", 5000, "Square iterations (both libraries).",
                       lower_bound=1)
  flags.DEFINE_float("p_init", 0.8, "Square's initial square area fraction.")
  flags.DEFINE_bool("square_rescale_schedule", False,
                    "Our Square's schedule of square sizes mapped onto --square_queries, as "
                    "ART's always is (False: AutoAttack's, made for 5000 queries).")
  flags.DEFINE_integer("seed", 0, "Seed of ours (+ batch index) and of NumPy before ART's.")
  flags.DEFINE_integer("batch", 256, "Images per batch of our attacks.", lower_bound=1)
  flags.DEFINE_integer("art_batch", 32, "batch_size of ART's attacks (ART's APGD default).",
                       lower_bound=1)
  flags.DEFINE_float("tolerance", 1.0, "Points by which ours may be above ART's accuracy.")
  flags.DEFINE_string("out_dir", None, "Folder for art_check.json and art_check.md.")


def budgets(apgd_steps, square_queries, square_rescale_schedule=False):
  """Column names of the attacks: their name and budget."""
  rescaled = ", rescaled" if square_rescale_schedule else ""
  return {"apgd-ce": f"APGD-CE ({apgd_steps} it.)", "apgd-dlr": f"APGD-DLR ({apgd_steps} it.)",
          "square": f"Square ({square_queries} q.{rescaled})"}


def predictions(net, x, batch=1024):
  """Class predictions of net(x, training=False), in batches."""
  return np.concatenate([np.argmax(net(x[i:i + batch], training=False).numpy(), axis=-1)
                         for i in range(0, len(x), batch)])


def _our_attack(name, net, eps, settings, box):
  fns = {
      "apgd-ce": lambda x, y, s: attacks.apgd(net, x, y, eps, settings["apgd_steps"], loss="ce",
                                              seed=s, **box),
      "apgd-dlr": lambda x, y, s: attacks.apgd(net, x, y, eps, settings["apgd_steps"],
                                               loss="dlr", seed=s, **box),
      "square": lambda x, y, s: attacks.square(net, x, y, eps, settings["square_queries"],
                                               p_init=settings["p_init"], seed=s,
                                               rescale_schedule=settings["rescale"], **box),
  }
  return fns[name]


def run_ours(name, net, x, y, eps, settings, box):
  """x_adv of our attack `name` over all of x, in batches of settings['batch']."""
  attack = _our_attack(name, net, eps, settings, box)
  spec = tf.TensorSpec((None,) + x.shape[1:], tf.float32)
  step = tf.function(attack, input_signature=[spec, tf.TensorSpec([None], tf.int64),
                                               tf.TensorSpec([], tf.int64)])
  out = []
  b = settings["batch"]
  for k, i in enumerate(range(0, len(x), b)):
    out.append(step(x[i:i + b], y[i:i + b], tf.constant(settings["seed"] + k, tf.int64)).numpy())
  return np.concatenate(out)


def art_classifier(net, input_shape, n_classes, box):
  """ART's TensorFlowV2Classifier around a Keras logits model."""
  from art.estimators.classification import TensorFlowV2Classifier

  return TensorFlowV2Classifier(
      model=net, nb_classes=n_classes, input_shape=tuple(input_shape), clip_values=box,
      loss_object=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))


def run_art(name, classifier, x, y, eps, settings):
  """x_adv of ART's attack `name` over all of x."""
  from art.attacks.evasion import AutoProjectedGradientDescent, SquareAttack

  if name == "square":
    attack = SquareAttack(classifier, norm=np.inf, eps=eps, max_iter=settings["square_queries"],
                          p_init=settings["p_init"], nb_restarts=1,
                          batch_size=settings["art_batch"], verbose=False)
  else:
    loss = {"apgd-ce": "cross_entropy", "apgd-dlr": "difference_logits_ratio"}[name]
    attack = AutoProjectedGradientDescent(
        classifier, norm=np.inf, eps=eps, eps_step=2 * eps, max_iter=settings["apgd_steps"],
        targeted=False, nb_random_init=1, batch_size=settings["art_batch"], loss_type=loss,
        verbose=False)
  np.random.seed(settings["seed"])
  return attack.generate(x=x, y=y).astype(np.float32)


def compare_model(net, x, y, *, eps=0.3, apgd_steps=100, square_queries=5000, p_init=0.8,
                  square_rescale_schedule=False, seed=0, batch=256, art_batch=32,
                  tolerance=1.0, n_classes=10, clip=(0.0, 1.0), label="model", verbose=True):
  """Runs every attack of both libraries on (x, y); returns the run's result dict."""
  settings = dict(apgd_steps=apgd_steps, square_queries=square_queries, p_init=p_init,
                  rescale=square_rescale_schedule, seed=seed, batch=batch, art_batch=art_batch)
  box = dict(clip_min=float(clip[0]), clip_max=float(clip[1]))
  x = np.asarray(x, np.float32)
  y = np.asarray(y, np.int64)
  correct_clean = predictions(net, x) == y
  classifier = art_classifier(net, x.shape[1:], n_classes, (box["clip_min"], box["clip_max"]))
  names = budgets(apgd_steps, square_queries, square_rescale_schedule)
  robust, acc, seconds, linf, outside = {}, {}, {}, {}, {}
  for lib in LIBRARIES:
    robust[lib], acc[lib], seconds[lib], linf[lib], outside[lib] = {}, {}, {}, {}, {}
    for name in ATTACKS:
      start = time.perf_counter()
      if lib == "ours":
        x_adv = run_ours(name, net, x, y, eps, settings, box)
      else:
        x_adv = run_art(name, classifier, x, y, eps, settings)
      seconds[lib][name] = round(time.perf_counter() - start, 2)
      robust[lib][name] = predictions(net, x_adv) == y
      acc[lib][name] = float(np.mean(robust[lib][name]))
      linf[lib][name] = float(np.max(np.abs(x_adv - x)))
      outside[lib][name] = bool(np.any(x_adv < box["clip_min"] - 1e-6)
                                or np.any(x_adv > box["clip_max"] + 1e-6))
      if verbose:
        print(json.dumps(dict(run=label, library=lib, attack=name, budget=names[name],
                              robust_acc=acc[lib][name], seconds=seconds[lib][name],
                              max_linf=linf[lib][name],
                              outside_box=outside[lib][name])), flush=True)
  worst = {lib: float(np.mean(np.logical_and.reduce(
      [correct_clean] + [robust[lib][name] for name in ATTACKS]))) for lib in LIBRARIES}
  diff = {name: round(100.0 * (acc["ours"][name] - acc["art"][name]), 2) for name in ATTACKS}
  diff["worst_case"] = round(100.0 * (worst["ours"] - worst["art"]), 2)
  no_weaker = {name: diff[name] <= tolerance + 1e-9 for name in diff}
  return dict(
      run=label, examples=int(len(x)), eps=eps, clean_acc=float(np.mean(correct_clean)),
      robust_acc=acc, worst_case=worst, diff_points=diff, no_weaker=no_weaker,
      all_no_weaker=all(no_weaker.values()), seconds=seconds, max_linf=linf,
      outside_box=outside,
      budgets=dict(apgd_steps=apgd_steps, square_queries=square_queries, p_init=p_init,
                   square_rescale_schedule=square_rescale_schedule,
                   art_apgd=dict(eps_step=2 * eps, nb_random_init=1, batch_size=art_batch),
                   art_square=dict(nb_restarts=1, batch_size=art_batch)),
      tolerance_points=tolerance, seed=seed)


def _pct(v):
  return f"{100.0 * v:.2f}"


def markdown(results, apgd_steps, square_queries, square_rescale_schedule=False):
  """Two tables: robust accuracy (%) per attack, library and their difference; wall seconds."""
  names = budgets(apgd_steps, square_queries, square_rescale_schedule)
  if results:
    r0 = results[0]
    lines = [f"L-inf eps = {r0['eps']}, first {r0['examples']} test images; robust accuracy "
             "(%) of our attacks and ART's, and ours - ART in points (ours should be no "
             f"weaker: <= ART + {r0['tolerance_points']}).", ""]
  else:
    lines = []
  header = ["Model", "Clean"]
  for name in ATTACKS:
    header += [f"{names[name]}, ours", f"{names[name]}, ART", f"{names[name]}, ours - ART"]
  header += ["Worst case, ours", "Worst case, ART", "Worst case, ours - ART", "No weaker?"]
  lines += ["| " + " | ".join(header) + " |", "| --- " * len(header) + "|"]
  for r in results:
    cells = [r["run"], _pct(r["clean_acc"])]
    for name in ATTACKS:
      cells += [_pct(r["robust_acc"]["ours"][name]), _pct(r["robust_acc"]["art"][name]),
                f"{r['diff_points'][name]:+.2f}"]
    cells += [_pct(r["worst_case"]["ours"]), _pct(r["worst_case"]["art"]),
              f"{r['diff_points']['worst_case']:+.2f}",
              "yes" if r["all_no_weaker"] else "no: " + ", ".join(
                  k for k, ok in r["no_weaker"].items() if not ok)]
    lines.append("| " + " | ".join(cells) + " |")
  lines += ["", "Wall seconds (ours include tracing):", ""]
  header = ["Model"] + [f"{names[n]}, {lib}" for n in ATTACKS for lib in ("ours", "ART")]
  lines += ["| " + " | ".join(header) + " |", "| --- " * len(header) + "|"]
  for r in results:
    lines.append("| " + " | ".join([r["run"]] + [
        f"{r['seconds'][lib][n]:.1f}" for n in ATTACKS for lib in LIBRARIES]) + " |")
  return "\n".join(lines) + "\n"


def _write(path, text):
  with open(path + ".tmp", "w") as f:
    f.write(text)
  os.replace(path + ".tmp", path)


def check(runs, data_dir=None, *, examples=1000, eps=0.3, apgd_steps=100, square_queries=5000,
          p_init=0.8, square_rescale_schedule=False, seed=0, batch=256, art_batch=32,
          tolerance=1.0, out_dir=None, verbose=True):
  """Compares the libraries on every run directory; prints JSON lines, writes --out_dir files
  and returns the list of per-run result dicts."""
  results = []
  for path in runs:
    net, run_cfg, _ = load_model(path, Config(dataset="mnist").resolved())
    info = data.dataset_info(run_cfg.dataset)
    x, y = data.eval_images(run_cfg.dataset, data_dir, examples, run_cfg.preprocess)
    result = compare_model(net, x, y, eps=eps, apgd_steps=apgd_steps,
                           square_queries=square_queries, p_init=p_init,
                           square_rescale_schedule=square_rescale_schedule, seed=seed,
                           batch=batch, art_batch=art_batch, tolerance=tolerance,
                           n_classes=info.n_classes, clip=clip_range(run_cfg.preprocess),
                           label=path, verbose=verbose)
    result.update(method=run_cfg.method, dataset=run_cfg.dataset)
    results.append(result)
    print(json.dumps(result), flush=True)
  if out_dir:
    os.makedirs(out_dir, exist_ok=True)
    _write(os.path.join(out_dir, JSON_NAME), json.dumps(results, indent=2) + "\n")
    _write(os.path.join(out_dir, MD_NAME),
           markdown(results, apgd_steps, square_queries, square_rescale_schedule))
  return results


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  try:
    import art  # noqa: F401
  except ImportError as e:
    raise app.UsageError("needs IBM ART: pip install adversarial-robustness-toolbox==1.20.1") \
        from e
  check(FLAGS.runs, FLAGS.data_dir, examples=FLAGS.examples, eps=FLAGS.eps,
        apgd_steps=FLAGS.apgd_steps, square_queries=FLAGS.square_queries, p_init=FLAGS.p_init,
        square_rescale_schedule=FLAGS.square_rescale_schedule, seed=FLAGS.seed,
        batch=FLAGS.batch, art_batch=FLAGS.art_batch, tolerance=FLAGS.tolerance,
        out_dir=FLAGS.out_dir)


if __name__ == "__main__":
  define_flags()
  app.run(main)
