"""The white-box attacks of --mode=eval and their budgets: `AttackSpec` holds one attack (pgd,
fgsm, apgd-ce, apgd-dlr or cw) with its eps, step size, steps, restarts and EOT samples;
`make_attack` turns it into `attack(model_fn, x, y) -> x_adv` from the `attacks` package;
`attack_specs` gives the spec(s) a resolved config asks for (`--attack=strongest`: every attack
of STRONGEST, the worst case per example); `clip_range` is the box adversarial examples are
clipped to. EVAL_BATCH, the batch size of the evaluation, lives here so that `anp.evaluate` and
`anp.sanity` share it without importing each other.
"""

import dataclasses

import attacks
from anp.errors import UserError

ATTACKS = ("pgd", "fgsm", "apgd-ce", "apgd-dlr", "cw")
STRONGEST = ("pgd", "apgd-ce", "apgd-dlr", "cw")
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

  def replace(self, **changes):
    return dataclasses.replace(self, **changes)

  def as_dict(self):
    out = dataclasses.asdict(self)
    if self.name == "fgsm":
      out.update(steps=1, rand_init=False)
    return out


def make_attack(spec):
  """`attack(model_fn, x, y) -> x_adv` of an AttackSpec (traceable inside tf.function)."""
  if spec.name not in ATTACKS:
    raise UserError(f"Flag --attack={spec.name!r} is not accepted; expected one of "
                    f"{', '.join(ATTACKS + ('strongest',))}.")
  common = dict(clip_min=spec.clip_min, clip_max=spec.clip_max, eot_samples=spec.eot_samples)
  if spec.name in ("pgd", "cw"):
    fn, kw = attacks.pgd, dict(eps=spec.eps, step_size=spec.step_size, steps=spec.steps,
                               rand_init=spec.rand_init, loss="ce" if spec.name == "pgd"
                               else "cw", **common)
  elif spec.name == "fgsm":
    fn, kw = attacks.fgsm, dict(eps=spec.eps, **common)
  else:
    fn, kw = attacks.apgd, dict(eps=spec.eps, steps=spec.steps,
                                loss="ce" if spec.name == "apgd-ce" else "dlr", **common)

  if spec.restarts > 1 and spec.name != "fgsm":
    def attack(model_fn, x, y):
      return attacks.attack_with_restarts(fn, model_fn, x, y, spec.restarts, **kw)
  else:
    def attack(model_fn, x, y):
      return fn(model_fn, x, y, **kw)
  attack.__name__ = spec.name
  return attack


def attack_specs(cfg, clip=(0.0, 1.0)):
  """{name: AttackSpec} of the white-box attack(s) a resolved config asks for."""
  names = STRONGEST if cfg.attack == "strongest" else tuple(cfg.attack.split(","))
  return {name: AttackSpec(name, eps=cfg.eps, step_size=cfg.step_size, steps=cfg.attack_steps,
                           restarts=cfg.restarts, eot_samples=cfg.eot_samples,
                           clip_min=clip[0], clip_max=clip[1]) for name in names}


def clip_range(preprocess):
  """The box adversarial examples are clipped to.

  [0, 1] pixels for 'pixel'. For 'original' the inputs are per-image standardized, and the
  original code still clips to [0, 1] in that space (np.clip(x_adv, 0, 1) in
  PGDAttack.perturb); we keep that so that its numbers can be reproduced.
  """
  del preprocess
  return 0.0, 1.0
