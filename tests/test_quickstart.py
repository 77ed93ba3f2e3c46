"""--mode=quickstart runs the whole MNIST pipeline (here with a tiny schedule)."""

import json
import os
import unittest

import pytest
import tensorflow as tf

from tests.helpers import SHARED_DATA, have_real_data
from tests.test_train import run_main


@unittest.skipUnless(have_real_data(), f"real MNIST not found in {SHARED_DATA}")
@pytest.mark.slow
class QuickstartTest(tf.test.TestCase):

  def test_pipeline_writes_every_result_and_says_where(self):
    root = os.path.join(self.get_temp_dir(), "qs")
    out = run_main("--mode=quickstart", f"--data_dir={SHARED_DATA}", f"--model_dir={root}",
                   "--steps_per_epoch=8", "--eval_examples=64", "--train_attack_steps=2",
                   "--attack_steps=3")
    self.assertEqual(out.returncode, 0, out.stderr[-3000:])
    for path in ("standard/eval.json", "anp_vs/eval.json", "export/1/saved_model.pb",
                 "export/pruning.json", "report/report.md", "report/units_per_layer.png"):
      self.assertTrue(os.path.isfile(os.path.join(root, path)), path)
      if not path.endswith((".pb", ".png")):
        self.assertIn(os.path.join(root, os.path.dirname(path)), out.stdout)
    anp_vs = json.load(open(os.path.join(root, "anp_vs", "eval.json")))
    self.assertEqual(anp_vs["examples"], 64)
    self.assertEqual(anp_vs["blackbox"]["source_model_dir"], os.path.join(root, "standard"))
    rows = [l for l in open(os.path.join(root, "report", "report.md")) if l.startswith("| ")]
    self.assertTrue(any(r.startswith("| Standard |") for r in rows), rows)
    self.assertTrue(any(r.startswith("| ANP-VS |") for r in rows), rows)


if __name__ == "__main__":
  tf.test.main()
