"""Which LeNet5-Caffe unit counts give a row's Memory / Flops at its Sparsity, with the
original's formulas (anp.deploy.efficiency)? Prints the closest counts, a JSON line each.

  python results/paper_units.py --sparsity=83.48 --memory=4.14 --flops=9.68   # paper's BP
  python results/paper_units.py --sparsity=84.16 --memory=6.81 --flops=10.57  # paper's ANP-VS

Every [conv1, conv2, dense3 inputs, dense4 inputs] whose sum gives the sparsity (rounded to
units) is scored by the relative error of Memory plus that of Flops.
"""

import json
import os
import sys

import numpy as np
from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from anp.deploy.efficiency import lenet_flops, lenet_memory  # pylint: disable=g-import-not-at-top
from models.lenet import LeNet5  # pylint: disable=g-import-not-at-top

FULL = LeNet5.unit_counts


def closest(sparsity, memory_pct, flops_x, top=5):
  """The `top` unit counts with `sparsity` (%) nearest to `memory_pct` / `flops_x`."""
  total = int(round(sum(FULL) * (1 - sparsity / 100)))
  a, b, c = np.meshgrid(np.arange(1, FULL[0] + 1), np.arange(1, FULL[1] + 1),
                        np.arange(1, FULL[2] + 1), indexing="ij")
  d = total - a - b - c
  ok = (d >= 1) & (d <= FULL[3])
  units = [x[ok].astype(np.float64) for x in (a, b, c, d)]
  # efficiency.paper_columns, on arrays of candidates (it takes one unit count at a time).
  memory = 100 * lenet_memory(units) / lenet_memory(FULL)
  speedup = lenet_flops(FULL) / lenet_flops(units)
  error = np.abs(memory / memory_pct - 1) + np.abs(speedup / flops_x - 1)
  return [{"units": [int(u[i]) for u in units], "memory_pct": round(float(memory[i]), 2),
           "flops_x": round(float(speedup[i]), 2)} for i in np.argsort(error)[:top]]


def main(_):
  f = flags.FLAGS
  for row in closest(f.sparsity, f.memory, f.flops, f.top):
    print(json.dumps(row))


if __name__ == "__main__":
  flags.DEFINE_float("sparsity", None, "Sparsity (%) of the row.", required=True)
  flags.DEFINE_float("memory", None, "Memory (%) of the row.", required=True)
  flags.DEFINE_float("flops", None, "Flops (x) of the row.", required=True)
  flags.DEFINE_integer("top", 5, "How many unit counts to print.")
  app.run(main)
