"""The white-box attacks of --mode=eval and their budgets: `AttackSpec` holds one attack of
ATTACKS with its eps, step size, steps, restarts, EOT samples and Square queries; `make_attack`
turns it into `attack(model_fn, x, y) -> x_adv` from the `attacks` package; `attack_specs` gives
the spec(s) a resolved config asks for (a comma-separated list; `strongest` stands for every
attack of STRONGEST, the worst case per example); `clip_range` is the box adversarial examples
are clipped to. AutoAttack (`autoattack`, `autoattack-rand`) runs with its published budget
(AUTOATTACK_STEPS APGD and FAB-T iterations, 9 APGD-T and FAB-T targets, `--square_queries`),
whatever `--attack_steps` says; its attack also reports which examples survive each of its
stages (`attack.stages`, `attack.with_stages`). EVAL_BATCH, the batch size of the sanity checks'
attacks, lives here so that `anp.evaluation.sanity` need not import `anp.evaluation.evaluate`.
"""

import dataclasses

import attacks
from attacks.autoattack import eot_samples_of
from anp.config import ATTACKS
from anp.errors import UserError

STRONGEST = ("pgd", "apgd-ce", "apgd-dlr", "cw", "square")
AUTOATTACK = {"autoattack": "standard", "autoattack-rand": "rand"}
AUTOATTACK_STEPS = 100
APGD_T_TARGETS = 9  # the target classes of APGD-T and FAB-T (AutoAttack's 9)
EVAL_BATCH = 256


@dataclasses.dataclass(frozen=True)
class AttackSpec:
  """One white-box attack and its budget. `steps` is ignored by fgsm."""

  name: str
  eps: float
  step_size: float
  steps: int
  restarts: int = 1
  eot_samples: int = 1
  rand_init: bool = True
  clip_min: float = 0.0
  clip_max: float = 1.0
  queries: int = 5000  # square, and the Square stage of autoattack

  def replace(self, **changes):
    return dataclasses.replace(self, **changes)

  def as_dict(self):
    out = dataclasses.asdict(self)
    if self.name == "fgsm":
      out.update(steps=1, rand_init=False)
    if self.name == "fab-t":
      out.update(eot_samples=1)  # FAB-T takes no EOT
    if self.name in AUTOATTACK:
      out.update(steps=AUTOATTACK_STEPS, step_size=None, restarts=1, eot_samples=_eot(self),
                 stages=list(attacks.autoattack_stages(AUTOATTACK[self.name])))
    if self.name not in ("square", "autoattack"):
      del out["queries"]
    return out


def make_attack(spec):
  """`attack(model_fn, x, y) -> x_adv` of an AttackSpec (traceable inside tf.function)."""
  if spec.name not in ATTACKS:
    raise UserError(f"Flag --attack={spec.name!r} is not accepted; expected one of "
                    f"{', '.join(ATTACKS + ('strongest',))}.")
  box = dict(clip_min=spec.clip_min, clip_max=spec.clip_max)
  common = dict(box, eot_samples=spec.eot_samples)
  if spec.name in AUTOATTACK:
    return _autoattack(spec, box)
  if spec.name in ("pgd", "cw"):
    fn, kw = attacks.pgd, dict(eps=spec.eps, step_size=spec.step_size, steps=spec.steps,
                               rand_init=spec.rand_init, loss="ce" if spec.name == "pgd"
                               else "cw", **common)
  elif spec.name == "fgsm":
    fn, kw = attacks.fgsm, dict(eps=spec.eps, **common)
  elif spec.name == "square":
    fn, kw = attacks.square, dict(eps=spec.eps, queries=spec.queries, **box)
  elif spec.name == "apgd-t":
    fn, kw = attacks.apgd_targeted, dict(eps=spec.eps, steps=spec.steps,
                                         targets=APGD_T_TARGETS, **common)
  elif spec.name == "fab-t":  # its restarts after the first start at random points
    fn, kw = attacks.fab_targeted, dict(eps=spec.eps, steps=spec.steps,
                                        n_targets=APGD_T_TARGETS, restarts=spec.restarts, **box)
  else:
    fn, kw = attacks.apgd, dict(eps=spec.eps, steps=spec.steps,
                                loss="ce" if spec.name == "apgd-ce" else "dlr", **common)

  if spec.restarts > 1 and spec.name not in ("fgsm", "fab-t"):
    def attack(model_fn, x, y):
      return attacks.attack_with_restarts(fn, model_fn, x, y, spec.restarts, **kw)
  else:
    def attack(model_fn, x, y):
      return fn(model_fn, x, y, **kw)
  attack.__name__ = spec.name
  return attack


def _autoattack(spec, box):
  """AutoAttack of a spec: the attack, plus `stages` and `with_stages` (robust per stage)."""
  version = AUTOATTACK[spec.name]
  kw = dict(eps=spec.eps, version=version, steps=AUTOATTACK_STEPS, targets=APGD_T_TARGETS,
            queries=spec.queries, eot_samples=_eot(spec), **box)

  def attack(model_fn, x, y):
    return attacks.autoattack(model_fn, x, y, **kw)

  attack.stages = attacks.autoattack_stages(version)
  attack.with_stages = lambda model_fn, x, y, judge_fn=None: attacks.autoattack(  # noqa: E731
      model_fn, x, y, return_stages=True, judge_fn=judge_fn, **kw)
  attack.__name__ = spec.name
  return attack


def _eot(spec):
  """The EOT samples an AutoAttack spec runs with: none for the standard version (whatever
  --eot_samples says); for rand, `attacks.autoattack.eot_samples_of`'s."""
  version = AUTOATTACK[spec.name]
  return eot_samples_of(version, spec.eot_samples if version == "rand" else None)


def attack_names(attack):
  """The attacks of an --attack value: a comma-separated list, `strongest` expanded."""
  names = []
  for name in attack.split(","):
    for n in (STRONGEST if name == "strongest" else (name,)):
      if n not in names:
        names.append(n)
  return tuple(names)


def attack_specs(cfg, clip=(0.0, 1.0)):
  """{name: AttackSpec} of the white-box attack(s) a resolved config asks for."""
  return {name: AttackSpec(name, eps=cfg.eps, step_size=cfg.step_size, steps=cfg.attack_steps,
                           restarts=cfg.restarts, eot_samples=cfg.eot_samples,
                           clip_min=clip[0], clip_max=clip[1], queries=cfg.square_queries)
          for name in attack_names(cfg.attack)}


def clip_range(preprocess):
  """The box adversarial examples are clipped to.

  [0, 1] pixels for 'pixel'. For 'original' the inputs are per-image standardized, and the
  original code still clips to [0, 1] in that space (np.clip(x_adv, 0, 1) in
  PGDAttack.perturb); we keep that so that its numbers can be reproduced.
  """
  del preprocess
  return 0.0, 1.0
