"""--mode=eval: clean and adversarial accuracy, vulnerability and sparsity of a run."""

import json
import os

import keras
import numpy as np
import tensorflow as tf

from anp import data, losses
from anp.runs import load_run
from attacks import pgd


def pgd_attack(cfg):
  """The evaluation attack of a resolved config: L-inf PGD, random start."""
  def attack(model_fn, x, y):
    return pgd(model_fn, x, y, eps=cfg.eps, step_size=cfg.step_size,
               steps=cfg.attack_steps, rand_init=True)
  return attack


def evaluate_net(net, dataset, attack, n_examples=None):
  """Clean/adversarial correctness and per-layer vulnerability over a dataset.

  `attack(model_fn, x, y) -> x_adv`. Returns a dict of fractions in [0, 1]:
  clean_acc, adv_acc, vulnerability (mean |f(x) - f(x_adv)| over units and examples,
  averaged over layers), layer_vulnerability, examples.
  """
  model_fn = lambda t: net(t, training=False)  # noqa: E731

  @tf.function
  def step(x, y):
    logits, feats = net(x, training=False, return_features=True)
    x_adv = attack(model_fn, x, y)
    logits_adv, feats_adv = net(x_adv, training=False, return_features=True)
    right = lambda z: tf.equal(tf.argmax(z, -1, output_type=tf.int32), tf.cast(y, tf.int32))  # noqa: E731
    return right(logits), right(logits_adv), losses.layer_vulnerabilities(feats, feats_adv)

  clean, adv, vul, sizes = [], [], [], []
  bar = keras.utils.Progbar(n_examples, unit_name="example")
  for x, y in dataset:
    c, a, v = step(x, y)
    clean.append(c.numpy()), adv.append(a.numpy()), vul.append(v.numpy())
    sizes.append(len(c))
    bar.add(len(c), [("clean_acc", float(np.mean(c))), ("adv_acc", float(np.mean(a)))])
  clean, adv = np.concatenate(clean), np.concatenate(adv)
  layer_vul = np.average(np.stack(vul), axis=0, weights=np.asarray(sizes, np.float64))
  return dict(clean_acc=float(clean.mean()), adv_acc=float(adv.mean()),
              vulnerability=float(layer_vul.mean()),
              layer_vulnerability=[float(v) for v in layer_vul], examples=int(len(clean)))


def format_table(result):
  """The printed summary: accuracies and sparsity in percent, as the paper's tables."""
  rows = [("Clean acc. (%)", f"{100 * result['clean_acc']:.2f}"),
          (f"{result['attack']['name'].upper()}-{result['attack']['steps']} acc. (%)",
           f"{100 * result['adv_acc']:.2f}"),
          ("Vulnerability", f"{result['vulnerability']:.4f}"),
          ("Sparsity (%)", f"{100 * result['sparsity']:.2f}"),
          ("Units kept", f"{result['n_active']} of {result['n_units']}")]
  width = max(len(k) for k, _ in rows)
  return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def run_eval(cfg, arrays=None):
  """Evaluates the run in --model_dir; writes <model_dir>/eval.json and returns it."""
  net, run_cfg = load_run(cfg.model_dir)
  # The attack settings come from the flags, the data set and input space from the run.
  cfg = cfg.__class__(**{**cfg.__dict__, "dataset": run_cfg.dataset,
                         "preprocess": run_cfg.preprocess}).resolved()
  _, _, x_te, y_te = arrays or data.load_arrays(cfg.dataset, cfg.data_dir)
  n = min(cfg.eval_examples or len(x_te), len(x_te))
  test_ds = data.make_dataset(x_te[:n], y_te[:n], 256, training=False,
                              preprocess=cfg.preprocess)
  result = evaluate_net(net, test_ds, pgd_attack(cfg), n)
  result.update(
      dataset=cfg.dataset, method=run_cfg.method, preprocess=cfg.preprocess,
      attack=dict(name="pgd", eps=cfg.eps, step_size=cfg.step_size,
                  steps=cfg.attack_steps, restarts=1, rand_init=True),
      n_active=net.n_active(), n_units=list(net.unit_counts), sparsity=net.sparsity())
  with open(os.path.join(cfg.model_dir, "eval.json"), "w") as f:
    json.dump(result, f, indent=2)
  print(format_table(result))
  return result
