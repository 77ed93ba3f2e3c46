"""The chunks a run was trained in, from its timing.jsonl: one JSON line per chunk.

  python results/chunks.py results/mnist/at [--gap_min=10] [--markdown]

timing.jsonl has one line per epoch, or per part of an epoch when a run resumed within it
(`anp/training/train.py`). Lines follow one another within a chunk; a new chunk starts when a line
began more than `--gap_min` minutes after the previous one ended, or on another machine.
Per chunk: its epochs, when it started, its wall minutes, and the seconds of its whole
epochs (parts of an epoch left out), fastest and slowest.
"""

import datetime
import json
import os
import sys

from absl import app, flags

flags.DEFINE_float("gap_min", 10.0, "Minutes between two lines that start a new chunk.")
flags.DEFINE_bool("markdown", False, "Print a markdown table instead of JSON lines.")
FLAGS = flags.FLAGS


def chunks(lines, gap_min=10.0):
  """Groups timing lines (dicts of anp/training/train.py's timing.jsonl) into chunks (dicts)."""
  if not lines:
    return []
  full_epoch = max(line["steps"] for line in lines)
  groups, end, machine = [], None, None
  for line in lines:
    start = datetime.datetime.fromisoformat(line["started"])
    if end is None or (start - end).total_seconds() > 60 * gap_min or line["machine"] != machine:
      groups.append([])
    groups[-1].append(line)
    end, machine = start + datetime.timedelta(seconds=line["wall_s"]), line["machine"]
  out = []
  for group in groups:
    whole = [line["wall_s"] for line in group if line["steps"] == full_epoch]
    out.append(dict(
        epochs=[group[0]["epoch"], group[-1]["epoch"]], started=group[0]["started"],
        wall_min=round(sum(line["wall_s"] for line in group) / 60, 1),
        epoch_s=[min(whole), max(whole)] if whole else None, machine=group[0]["machine"]))
  return out


def main(argv):
  if len(argv) != 2:
    raise app.UsageError("usage: python results/chunks.py RUN_DIR")
  path = os.path.join(argv[1], "timing.jsonl")
  if not os.path.isfile(path):
    sys.exit(f"no timing.jsonl in {argv[1]}")
  with open(path) as f:
    rows = chunks([json.loads(line) for line in f if line.strip()], FLAGS.gap_min)
  if not FLAGS.markdown:
    for row in rows:
      print(json.dumps(row))
    return
  print("| epochs | started | wall min | s per whole epoch | machine |\n| --- | --- | --- | --- | --- |")
  for r in rows:
    per_epoch = "-".join(f"{s:.0f}" for s in r["epoch_s"]) if r["epoch_s"] else "n/a"
    print(f"| {r['epochs'][0]}-{r['epochs'][1]} | {r['started']} | {r['wall_min']} | "
          f"{per_epoch} | {r['machine']} |")


if __name__ == "__main__":
  app.run(main)
