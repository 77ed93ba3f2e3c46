"""results/art_check.py: our APGD / Square beside IBM ART's (skipped where ART is absent)."""

import json
import os

import numpy as np
import pytest

pytest.importorskip("art")

from anp.config import Config  # noqa: E402
from anp.runs.rundir import build_net  # noqa: E402
from tests.helpers import REPO, SHARED_DATA, have_real_data, results_script  # noqa: E402

EPS = 0.3
TINY = dict(eps=EPS, apgd_steps=5, square_queries=20, seed=0)


@pytest.fixture(scope="module")
def art_check():
  return results_script("art_check")


def assert_result(art_check, r, n):
  assert r["examples"] == n and r["eps"] == EPS
  assert 0.0 <= r["clean_acc"] <= 1.0
  for lib in art_check.LIBRARIES:
    assert set(r["robust_acc"][lib]) == set(art_check.ATTACKS)
    assert 0.0 <= r["worst_case"][lib] <= r["clean_acc"] + 1e-9
    for name in art_check.ATTACKS:
      acc = r["robust_acc"][lib][name]
      assert 0.0 <= acc <= 1.0
      assert r["worst_case"][lib] <= acc + 1e-9
      assert r["max_linf"][lib][name] <= EPS + 1e-5
      assert r["outside_box"][lib][name] is False
      assert r["seconds"][lib][name] >= 0.0
  for name in art_check.ATTACKS:
    diff = 100.0 * (r["robust_acc"]["ours"][name] - r["robust_acc"]["art"][name])
    assert r["diff_points"][name] == pytest.approx(diff, abs=0.01)
    assert r["no_weaker"][name] == (r["diff_points"][name] <= r["tolerance_points"] + 1e-9)
  assert r["all_no_weaker"] == all(r["no_weaker"].values())
  json.dumps(r)  # JSON-serialisable


def test_compare_model_on_a_fresh_lenet(art_check):
  """Both libraries' three attacks on a freshly built LeNet5 and 16 random images."""
  net = build_net(Config(dataset="mnist", method="standard").resolved())
  rng = np.random.default_rng(0)
  x = rng.uniform(0.0, 1.0, (16, 28, 28, 1)).astype(np.float32)
  net(x[:1], training=False)
  y = np.argmax(net(x, training=False).numpy(), axis=-1)  # all correct: clean accuracy 1
  y[:4] = (y[:4] + 1) % 10  # four wrong: robust nowhere
  r = art_check.compare_model(net, x, y, label="fresh", verbose=False, **TINY)
  assert_result(art_check, r, 16)
  assert r["clean_acc"] == pytest.approx(12 / 16)
  table = art_check.markdown([r], 5, 20)
  for header in ("APGD-CE (5 it.), ours", "APGD-DLR (5 it.), ART", "Square (20 q.), ours - ART",
                 "Worst case, ART"):
    assert header in table


@pytest.mark.skipif(not have_real_data()
                    or not os.path.isfile(os.path.join(REPO, "results/mnist/anp_vs/config.json")),
                    reason="needs ../shared/data and the committed results/mnist/anp_vs run")
@pytest.mark.slow
def test_check_on_the_committed_anp_vs(art_check, tmp_path, capsys):
  """check(): JSON lines on stdout, art_check.json / art_check.md in out_dir."""
  run = os.path.join(REPO, "results", "mnist", "anp_vs")
  results = art_check.check([run], SHARED_DATA, examples=16, out_dir=str(tmp_path), **TINY)
  assert len(results) == 1
  assert_result(art_check, results[0], 16)
  assert results[0]["method"] == "anp_vs" and results[0]["dataset"] == "mnist"
  lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()
           if line.startswith("{")]
  assert len(lines) == 2 * len(art_check.ATTACKS) + 1
  assert {(d["library"], d["attack"]) for d in lines[:-1]} == {
      (lib, name) for lib in art_check.LIBRARIES for name in art_check.ATTACKS}
  assert lines[-1] == json.loads(json.dumps(results[0]))
  assert sorted(os.listdir(tmp_path)) == ["art_check.json", "art_check.md"]
  with open(tmp_path / "art_check.json") as f:
    assert json.load(f) == json.loads(json.dumps(results))
  table = (tmp_path / "art_check.md").read_text()
  assert "Square (20 q.), ART" in table and f"| {run} | " in table
