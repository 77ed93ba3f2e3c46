"""What an export says about itself: the model's config.json and MODEL_CARD.md.

`model_config` keeps of a run's Config what describes the served model: the run's identity
(`Config.run_keys`: data set, method, preprocessing, training attack, loss weights, ...), the
schedule length, the defence or ensemble it serves with and, once pruned, the units kept; no
data folder and no other method's fields. `write_model_card(export_dir, run_dir)` writes both
into an export (also one written before this module existed), reading the run's config.json,
its eval*.json files, the export's own eval*.json and pruning.json.
"""

import glob
import json
import os

from anp import methods
from anp.atomic import write_whole
from anp.config import Config, architecture, run_config_path
from anp.data import dataset_info
from anp.evaluation import labels
from anp.runs.provenance import is_training_run, stage_commands, train_command, trained

CARD = "MODEL_CARD.md"
PRUNING_JSON = "pruning.json"


def model_config(cfg, pruning=None):
  """The config.json of an export of `cfg`, a dict that `Config.load` reads back."""
  method = methods.get(cfg.method)
  keys = list(cfg.run_keys) + ["epochs"]
  if cfg.defense != "none":
    keys += ["defense", "sap_frac", "sap_gradient"]
  if not method.deterministic:
    keys += ["bnn_ensemble"]  # the weight samples each served prediction averages
  term = method.data_term(cfg)
  unused = {"trades_beta": term != "trades", "lambda_vs": not method.vulnerability,
            "adv_weight": term != "mixed" or not method.adversarial,
            "beta": not (method.masked or term == "sampled"),
            "init_lr": not method.masked, "thres": not method.masked}
  values = {k: getattr(cfg, k) for k in keys
            if getattr(cfg, k) is not None and not unused.get(k)}
  values["architecture"] = architecture(cfg.dataset)
  if pruning:
    values["units_kept"], values["units_total"] = pruning["n_active"], pruning["n_units"]
  return values


def version_dir(export_dir):
  """The SavedModel folder of `export_dir`: itself, or its latest integer version."""
  if os.path.isfile(os.path.join(export_dir, "saved_model.pb")):
    return export_dir
  versions = [int(d) for d in os.listdir(export_dir) if d.isdigit()]
  if not versions:
    raise FileNotFoundError(f"No SavedModel in {export_dir!r}.")
  return os.path.join(export_dir, str(max(versions)))


def _json(path):
  if not os.path.isfile(path):
    return None
  with open(path) as f:
    return json.load(f)


ARCHITECTURES = {"lenet": "LeNet5-Caffe", "vgg": "VGG-16"}
DATASET_NAMES = {"mnist": "MNIST", "fashion_mnist": "Fashion-MNIST", "cifar10": "CIFAR-10",
                 "cifar100": "CIFAR-100"}


def _title(name):
  method = methods.find(name)
  return method.title if method else name


def attack_name(result, key):
  """A name such as 'PGD-40 (1 restart, step 0.01)' of a `per_attack` key of eval.json."""
  label = labels.per_attack_label(result, key)
  spec = labels.specs(result).get(key)
  details = labels.attack_details(spec) if spec else ""
  return f"{label} ({details})" if details else label


def metrics_table(result):
  """Markdown rows (accuracy in %) of one eval.json dict."""
  rows = [("Clean", result["clean_acc"])]
  per_attack = result.get("per_attack") or {}
  rows += [(attack_name(result, name), acc) for name, acc in per_attack.items()]
  if len([n for n in per_attack if "/" not in n]) > 1:
    rows.append(("Worst case per example over the attacks above", result["adv_acc"]))
  if result.get("blackbox"):
    bb = result["blackbox"]
    rows.append((f"Black box: {attack_name(bb, bb['attack']['name'])} crafted on "
                 f"the {_title(bb.get('source_method'))} model {bb.get('source_model_dir')}",
                 bb["adv_acc"]))
  return ["| Attack | Accuracy (%) |", "| --- | --- |"] + [
      f"| {label} | {100 * acc:.2f} |" for label, acc in rows]


def limitations(cfg, results, method):
  notes = [f"One training run (seed {cfg.seed}): no spread over seeds is measured.",
           f"Robustness is measured against L-inf attacks of radius {cfg.eps:g} only (no L2, "
           "patch, corruption or distribution-shift robustness)."]
  specs = [s for r in results for n, s in labels.specs(r).items()
           if n and n.startswith("autoattack")]
  if not specs:
    notes.append("Not evaluated with AutoAttack: the white-box numbers are upper bounds from "
                 "the attacks listed.")
  for spec in specs:
    if not labels.with_fab_t(spec):
      notes.append(f"AutoAttack ran without FAB-T (stages: {', '.join(spec['stages'])}), a "
                   "subset of the standard cascade.")
      break
  for r in results:
    n = r.get("examples")
    if n and n < dataset_info(cfg.dataset).n_test:
      notes.append(f"{r['file']}: evaluated on the first {n} test images.")
    notes += [f"{r['file']}: {w}" for w in r.get("warnings") or []]
  if not method.deterministic:
    notes.append(f"Every prediction is random (an ensemble of {cfg.bnn_ensemble} weight "
                 "samples per call); its white-box attacks average gradients over EOT samples.")
  if cfg.defense == "sap":
    notes.append(f"Stochastic Activation Pruning (frac {cfg.sap_frac:g}) runs in every call: "
                 "predictions are random; attack it with expectation over transformation "
                 f"(--eot_samples); gradient mode '{cfg.sap_gradient}'.")
  return sorted(set(notes), key=notes.index)


def _stored(pruning):
  """How the served weights are stored (pruning.json of an older export has no 'bytes')."""
  p = pruning["params"]
  if pruning.get("weight_pruning") and "bytes" in p:
    return (f"{p['bytes'] / 1024:.1f} KiB of weights, the kernels under a quarter full stored "
            "as their non-zero float32 values and int32 positions")
  return f"float32 weights, {p.get('bytes', 4 * p['compact']) / 1024:.1f} KiB"


def _efficiency(pruning, results):
  if pruning:
    p, f, paper = pruning["params"], pruning["flops"], pruning["paper"]
    kept = ", ".join(f"{k}/{t}" for k, t in zip(pruning["n_active"], pruning["n_units"]))
    w = pruning.get("weight_pruning")
    params = (f"- Parameters: {p['compact']:,} served ({p['dense']:,} in the unpruned network, "
              f"{p['compact'] / p['dense']:.2%}); {_stored(pruning)}.")
    logits = (f"- Served logits equal the {'pruned' if w else 'masked'} network's up to "
              f"{pruning['max_abs_logit_diff']:.1e} on {pruning['checked_examples']} test images.")
    if w:
      return [f"- Weights kept: {w['weights_kept']:,} of the {w['weights_total']:,} conv / dense "
              f"kernel entries (sparsity {100 * w['sparsity']:.2f}%).",
              f"- Units served per layer: {kept} (the units pruning left without weights "
              "are removed, their constant outputs folded into the next layer).",
              params,
              f"- FLOPs per image: {f['compact']:,} as served ({f['dense']:,} unpruned, "
              f"x{f['ratio']:.2f} fewer; the zeros left in the served kernels are multiplied "
              f"too): the non-zero weights alone take x{w['flops_ratio']:.2f} fewer.",
              f"- The table's columns (of the weights): memory {w['memory_pct']:.2f}%, FLOPs "
              f"x{w['flops_ratio']:.2f}, sparsity {100 * w['sparsity']:.2f}%.",
              logits]
    return [f"- Units kept per layer: {kept}.",
            params,
            f"- FLOPs per image: {f['compact']:,} ({f['dense']:,} unpruned, x{f['ratio']:.2f} "
            "fewer).",
            f"- The paper's columns: memory {paper['memory_pct']:.2f}%, FLOPs "
            f"x{paper['flops_ratio']:.2f}, sparsity {paper['sparsity_pct']:.2f}%.",
            logits]
  for r in results:
    if r.get("memory_pct") is not None:
      return [f"- The paper's columns: memory {r['memory_pct']:.2f}%, FLOPs "
              f"x{r['flops_ratio']:.2f}, sparsity {r['sparsity_pct']:.2f}% (from "
              f"{r['model_dir']}/eval.json)."]
  return ["- Not pruned: the served network has the architecture's full size."]


def _trained(run_dir):
  """What the run's train_log.jsonl says of its length (training may have been cut short)."""
  done = trained(run_dir) if is_training_run(run_dir) else None
  if not done or not done["epoch"]:
    return ""
  return f"Trained {done['epoch']} of {done['epochs']} epochs ({done['step']} steps)."


def write_model_card(export_dir, run_dir, checkpoint=None):
  """Writes config.json (`model_config`) into the export's SavedModel folder and MODEL_CARD.md
  beside it and in `export_dir`; returns the card's text. The SavedModel is not touched.

  `checkpoint` names an earlier checkpoint of the run that the export was made from (e.g.
  'the end of epoch 38'): the card says so and leaves out the run's own evaluations, which are
  of its final checkpoint."""
  path = version_dir(export_dir)
  run_cfg = Config.load(run_config_path(run_dir)).resolved()
  served = path if os.path.isfile(run_config_path(path)) else run_dir
  cfg = Config.load(run_config_path(served)).resolved()  # with the serving changes
  method = methods.get(cfg.method)
  pruning = _json(os.path.join(path, PRUNING_JSON)) or _json(
      os.path.join(export_dir, PRUNING_JSON))
  write_whole(run_config_path(path), json.dumps(model_config(cfg, pruning), indent=2) + "\n")
  files = [] if checkpoint else sorted(glob.glob(os.path.join(run_dir, "eval*.json")))
  files += sorted(glob.glob(os.path.join(path, "eval*.json")))
  files = list({os.path.realpath(f): f for f in files}.values())
  results = [dict(r, file=f) for f in files if (r := _json(f))]
  info = dataset_info(cfg.dataset)
  shape = ", ".join(str(d) for d in info.image_shape)
  n = info.n_classes
  name = DATASET_NAMES.get(cfg.dataset, cfg.dataset)
  # The tables' row name ('Pretrained AT', 'ADMM 80%', 'LWM 90%'), not the method's title.
  title = method.row_name(dict(init_from=run_cfg.init_from,
                               hydra=method.row_settings(run_cfg)))
  lines = [f"# {title} {ARCHITECTURES[architecture(cfg.dataset)]} on {name}", "",
           f"SavedModel `{path}`, exported from the run `{run_dir}`"
           + (f" at its checkpoint of {checkpoint}, not its final one." if checkpoint else "."),
           "",
           "## Data", "",
           f"{name} (`--dataset={cfg.dataset}`): {info.n_train} training images, "
           f"{info.n_test} test images. Inputs are pixels in [0, 1]"
           + ("; per-image standardisation runs inside the SavedModel (the run trained "
              "with --preprocess=original)." if run_cfg.preprocess == "original" else "."),
           "", "## Threat model", "",
           f"L-inf perturbations of at most eps = {cfg.eps:g} in the SavedModel's input space "
           "(pixels in [0, 1]); adversarial images are clipped to [0, 1]. The white-box "
           "attacks know the weights and gradients; the black-box row transfers examples "
           f"crafted on another model. Training attack: PGD-{cfg.train_attack_steps}, step "
           f"{cfg.step_size:g}, eps {cfg.eps:g}.", "",
           "## Metrics", ""]
  for r in results:
    kind = "the SavedModel" if r.get("model_kind") == "saved_model" else "the training run"
    lines += [f"`{r['file']}` ({kind}, {r.get('examples')} test images, eps "
              f"{r['attack']['eps']:g}):", "", *metrics_table(r), ""]
  if not results:
    lines += ["Not evaluated yet: python main.py --mode=eval --model_dir=" + path, ""]
  export_mode = "prune" if pruning else "export"
  lines += ["## Training", "", "```",
            *(stage_commands(run_dir) if is_training_run(run_dir)
              else [train_command(run_cfg, run_dir)]),
            f"python main.py --mode={export_mode} --model_dir={run_dir} "
            f"--export_dir={export_dir}"
            + (f" --defense=sap --sap_frac={cfg.sap_frac:g}" if cfg.defense == "sap" else ""),
            "```", "", " ".join(filter(None, [
                "DATA: the folder of the raw data archives (without it, TFDS is tried).",
                "" if checkpoint else _trained(run_dir),
                f"The model's settings: `{run_config_path(path)}`."])), "",
            "## Size", "", *_efficiency(pruning, results), "",
            "## Serving signature", "",
            "`serving_default`: input `images`, float32 [batch, " + shape + "], pixels in "
            "[0, 1] (another image size is refused). Outputs: `probabilities` float32 "
            f"[batch, {n}] (softmax), `classes` int64 [batch] (argmax), `logits` float32 "
            f"[batch, {n}]" + ("" if method.deterministic else
                               " (the log of the ensemble's mean softmax)") + ".", "",
            "## Limitations", "", *[f"- {note}" for note in limitations(cfg, results, method)],
            ""]
  text = "\n".join(lines)
  for folder in {path, export_dir}:
    write_whole(os.path.join(folder, CARD), text)
  return text
