"""main.py's command line: bad values refused at once, before TensorFlow is imported; help
exits 0; every numeric flag's --help bound is the one its parser and `Config.validate` use."""

import math
import os
import re
import subprocess
import sys

import pytest
from absl.flags import FloatParser, IntegerParser

import flags
from anp.config import Config
from anp.errors import UserError
from tests.helpers import REPO, run_main


@pytest.fixture(scope="module")
def a_file(tmp_path_factory):
  path = tmp_path_factory.mktemp("cli") / "a_file"
  path.write_text("not a directory\n")
  return str(path)


BAD = [
    (["--mode=train", "--model_dir={file}"], "--model_dir"),
    (["--mode=train", "--data_dir={missing}"], "--data_dir"),
    (["--mode=train", "--model_dir={missing}", "--init_from={missing}/run"], "--init_from"),
    (["--mode=eval", "--model_dir={missing}"], "--model_dir"),
    (["--mode=eval", "--model_dir=.", "--source_model_dir={missing}"], "--source_model_dir"),
    (["--mode=eval", "--model_dir=.", "--eval_dir={file}"], "--eval_dir"),
    (["--mode=export", "--model_dir=."], "--export_dir"),
    (["--mode=prune", "--model_dir=.", "--export_dir={file}"], "--export_dir"),
    (["--mode=report", "--runs=.,{missing}"], "--runs"),
    (["--prune_ratio=1.5"], "--prune_ratio"),
    (["--method=hydra", "--prune_ratio=1"], "--prune_ratio"),
    (["--init_lr=0"], "--init_lr"),
    (["--method=at_bnn", "--bnn_prior_sigma=0"], "--bnn_prior_sigma"),
    (["--admm_rho=-1"], "--admm_rho"),
    (["--seed=-1"], "--seed"),
    (["--dataset=svhn"], "--dataset"),
    (["--method=magic"], "--method"),
    (["--attack=pgd,bogus"], "--attack"),
    (["--jit_compile", "--strategy=mirrored"], "--jit_compile"),
    (["--dataset=cifar10", "--train_attack_dtype=bfloat16"], "--train_attack_dtype"),
    (["--mode=train", "stray"], "unexpected arguments"),
]


@pytest.mark.parametrize("args,named", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_a_bad_value_is_refused_at_once_in_one_line(args, named, a_file, tmp_path):
  missing = str(tmp_path / "missing")
  args = [a.format(file=a_file, missing=missing) for a in args]
  out, seconds = run_main(*args)
  lines = out.stderr.strip().splitlines()
  assert out.returncode == 2, out.stderr
  assert lines[-1] == "tensorflow imported: False", out.stderr
  assert len(lines) == 2 and lines[0].startswith("error: ") and named in lines[0], out.stderr
  assert seconds < 3, f"{seconds:.1f} s"


# The method's own checks (`Method.validate`) need its object, whose module imports TensorFlow:
# they come after the import, still as one line.
AFTER_IMPORT = [(["--method=hydra", "--hydra_scores=magnitude"], "--hydra_scores"),
                (["--method=awt", "--batch_size=1"], "--batch_size")]


@pytest.mark.parametrize("args,named", AFTER_IMPORT, ids=[a[0] for a, _ in AFTER_IMPORT])
def test_a_methods_own_check_is_one_line_after_the_import(args, named, tmp_path):
  out, _ = run_main("--mode=train", f"--model_dir={tmp_path}/run", *args)
  lines = out.stderr.strip().splitlines()
  assert out.returncode == 2 and len(lines) == 2, out.stderr
  assert lines[0].startswith("error: ") and named in lines[0], out.stderr
  assert not os.path.exists(tmp_path / "run")


def test_helpxml_exits_zero():
  out, _ = run_main("--helpxml")
  assert out.returncode == 0 and "<name>prune_ratio</name>" in out.stdout, out.stderr


@pytest.mark.parametrize("flag", ["--help", "--helpfull", "-h"])
def test_help_exits_zero_without_tensorflow(flag):
  out, _ = run_main(flag)
  assert out.returncode == 0, out.stderr
  assert "tensorflow imported: False" in out.stderr
  assert "python main.py --mode=train" in out.stdout and "--prune_ratio" in out.stdout
  assert ("--flagfile" in out.stdout) == (flag == "--helpfull")  # absl's own flags


def claimed(syntactic_help):
  """(low, high, open_low, open_high) that absl's note under a flag's help states."""
  kind = r"(?:an? )?(?:positive |non-negative )?(?:integer|number)"
  m = re.fullmatch(rf"{kind}(?: (>=?) (\S+)| in (?:the range )?([\[(])(\S+), (\S+)([\])]))?",
                   syntactic_help)
  assert m, f"unknown bound note {syntactic_help!r}"
  if "non-negative" in syntactic_help:
    return 0, math.inf, False, False
  if "positive" in syntactic_help:
    return 1, math.inf, False, False  # absl's for an integer >= 1
  if m.group(1):
    return float(m.group(2)), math.inf, m.group(1) == ">", False
  if m.group(3):
    return float(m.group(4)), float(m.group(5)), m.group(3) == "(", m.group(6) == ")"
  return -math.inf, math.inf, False, False


def in_claim(value, claim):
  low, high, open_low, open_high = claim
  return (low < value or (value == low and not open_low)) and (
      value < high or (value == high and not open_high))


NUMERIC = sorted(name for name, flag in flags.FLAGS._flags().items()  # noqa: SLF001
                 if isinstance(flag.parser, (FloatParser, IntegerParser))
                 and name in Config.__dataclass_fields__)


def test_every_numeric_field_has_a_flag():
  assert len(NUMERIC) >= 30, NUMERIC


@pytest.mark.parametrize("name", NUMERIC)
def test_help_bound_parser_and_config_agree(name):
  flag = flags.FLAGS[name]
  # The bound is absl's note alone: the help text states none that could disagree.
  assert not re.search(r"[<>]=? ?-?\d|\bin [\[(]|\bpositive\b|non-negative", flag.help), (
      flag.help)
  claim = claimed(flag.parser.syntactic_help)
  integer = isinstance(flag.parser, IntegerParser)
  probes = [-2, -1, 0, 1, 2, 3] if integer else [-1, -1e-9, 0, 1e-9, 0.5, 1 - 1e-9, 1, 1.5, 2]
  for value in probes:
    try:
      flag.parser.parse(str(value))
      parsed = True
    except ValueError:
      parsed = False
    try:
      Config(**{name: value}).validate(method_checks=False)
      valid = True
    except UserError:
      valid = False
    want = in_claim(value, claim)
    assert parsed == want == valid, (
        f"--{name}={value}: help says {'yes' if want else 'no'} "
        f"({flag.parser.syntactic_help}), parser {parsed}, Config.validate {valid}")


# ----------------------------------------------------------------------------------------------
# Packaging (pyproject.toml).


def test_pyproject_installs_the_checkout_layout_and_the_anp_command():
  import tomllib
  with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
    project = tomllib.load(f)
  setup = project["tool"]["setuptools"]
  assert sorted(setup["py-modules"]) == ["flags", "main"]
  assert sorted(setup["packages"]["find"]["include"]) == ["anp*", "attacks*", "models*"]
  assert setup["dynamic"]["dependencies"]["file"] == ["requirements.txt"]
  module, function = project["project"]["scripts"]["anp"].split(":")
  out = subprocess.run([sys.executable, "-c", f"import {module}; {module}.{function}()",
                        "--mode=train", "--prune_ratio=2"],
                       capture_output=True, text=True, timeout=120, cwd=REPO)
  assert out.returncode == 2 and "--prune_ratio" in out.stderr, out.stderr
  assert any(m.startswith("slow:") for m in project["tool"]["pytest"]["ini_options"]["markers"])


def test_another_models_package_on_the_path_is_refused(tmp_path):
  (tmp_path / "models").mkdir()
  (tmp_path / "models" / "__init__.py").write_text("")
  env = dict(os.environ, PYTHONPATH=REPO)
  out = subprocess.run([sys.executable, "-c", "import anp"], capture_output=True, text=True,
                       timeout=120, cwd=tmp_path, env=env)  # the cwd comes first on sys.path
  assert out.returncode == 1 and "anp needs the package 'models'" in out.stderr, out.stderr
  os.remove(tmp_path / "models" / "__init__.py")
  os.rmdir(tmp_path / "models")
  out = subprocess.run([sys.executable, "-c", "import anp, importlib.util as u; "
                        "print(u.find_spec('models').origin)"],
                       capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env)
  assert out.returncode == 0 and out.stdout.startswith(os.path.join(REPO, "models")), out
