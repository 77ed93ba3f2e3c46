"""Two models compared example by example on the same test images.

Each evaluation keeps its per-example verdicts in `eval_examples.npz` (`EXAMPLES_FILE`, written
by `anp.evaluation.evaluate`). Two models evaluated on the same images differ in
robust accuracy by (b - c) / n, where b counts the images only the first model keeps and c
those only the second keeps; the images both keep or both lose say nothing about which is
stronger. McNemar's exact test (McNemar 1947) asks whether b and c differ by more than chance:
under "both models equally robust" each of the b + c discordant images is the first model's
with probability 1/2, so the two-sided p-value is

    p = min(1, 2 P[X <= min(b, c)]),  X ~ Binomial(b + c, 1/2).

Paired in this way, a difference is judged against b + c images, not against the spread of
each accuracy on its own: tighter when the models keep mostly the same images.
"""

import math
import os

import numpy as np

# Beside eval.json: each test example's verdicts, in the test set's order (bool arrays): clean
# (correct on x), robust (the white-box worst case), per_attack (a row per name of attacks,
# eval.json's per_attack keys, AutoAttack's stages included) and, with a source, blackbox.
EXAMPLES_FILE = "eval_examples.npz"


def load_verdicts(path):
  """{name: bool array} of an eval_examples.npz (clean, robust, blackbox and one entry per
  attack name of `per_attack`), or None where there is no such file."""
  if not os.path.isfile(path):
    return None
  with np.load(path) as f:
    out = {k: f[k] for k in f.files if k not in ("attacks", "per_attack")}
    out.update(zip(f["attacks"].tolist(), f["per_attack"]))
  return out


def mcnemar_exact(b, c):
  """The two-sided exact McNemar p-value of b and c discordant examples (1.0 when none)."""
  n, k = b + c, min(b, c)
  if n == 0:
    return 1.0
  tail = sum(math.comb(n, i) for i in range(k + 1))
  return min(1.0, 2 * tail / 2 ** n)


def compare(first, second):
  """first, second: bool arrays, an example's verdict (robust / correct) under two models.

  Returns dict(first, second: accuracies in %, diff: first - second in points, only_first,
  only_second: the discordant counts, p: McNemar's exact p-value, examples)."""
  first, second = np.asarray(first, bool), np.asarray(second, bool)
  if first.shape != second.shape:
    raise ValueError(f"verdicts of {first.shape} and {second.shape} examples: not the same "
                     "test images")
  b, c = int((first & ~second).sum()), int((second & ~first).sum())
  return dict(first=100 * first.mean(), second=100 * second.mean(),
              diff=100 * (b - c) / first.size, only_first=b, only_second=c,
              p=mcnemar_exact(b, c), examples=int(first.size))


def table_line(label, first, second):
  """The markdown line of `compare(first, second)`, headed by `label`: both accuracies, the
  difference, the discordant counts and the p-value."""
  r = compare(first, second)
  return (f"| {label} | {r['first']:.2f} | {r['second']:.2f} | {r['diff']:+.2f} | "
          f"{r['only_first']} | {r['only_second']} | {r['p']:.2g} |")


def paired_table(names, verdicts, reference, key="robust"):
  """A markdown table comparing every row with the row `reference` (a name of `names`) under
  the verdict `key` of their eval_examples.npz (`verdicts`: a dict or None per row); rows
  without the file, or on other test images, are left out. None when nothing compares."""
  if reference not in names or verdicts[names.index(reference)] is None:
    return None
  ref = verdicts[names.index(reference)][key]
  what = {"robust": "worst case acc.", "clean": "clean acc."}.get(key, f"{key} acc.")
  lines = [f"| Model | Its {what} | {reference}'s {what} | Difference (points) | Only the model "
           f"keeps | Only {reference} keeps | p (exact McNemar) |",
           "| --- | --- | --- | --- | --- | --- | --- |"]
  for name, v in zip(names, verdicts):
    if name == reference or v is None or v[key].shape != ref.shape:
      continue
    lines.append(table_line(name, v[key], ref))
  return "\n".join(lines) + "\n" if len(lines) > 2 else None
