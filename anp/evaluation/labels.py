"""The names of attacks in tables, reports, model cards and `results/paper.py`.

One place, free of TensorFlow, reads eval.json's attack records: `attack_label` gives the short
header of an attack's settings ('PGD-40', 'Square-5000', 'AutoAttack without FAB-T'),
`per_attack_label` that of a `per_attack` key (a stage of AutoAttack's cascade included),
`worst_case_attacks` the attacks behind a per-example worst case, and `attack_details` the
settings a model card spells out beside a label.
"""

STAGE_LABELS = {"apgd-ce": "APGD-CE", "apgd-dlr": "APGD-DLR", "apgd-t": "APGD-T",
                "fab-t": "FAB-T", "square": "Square"}


def with_fab_t(spec):
  """Whether a standard AutoAttack spec's recorded cascade had FAB-T (specs that record no
  stages are taken as they read)."""
  return "fab-t" in spec.get("stages", ("fab-t",))


def attack_label(spec):
  """'PGD-40', 'APGD-CE-100', 'Square-5000', 'FGSM', 'AutoAttack' of an attack's spec dict."""
  name = spec.get("name") or "pgd"
  if name.startswith("autoattack"):
    if name.endswith("rand"):
      return "AutoAttack-rand"
    return "AutoAttack" + ("" if with_fab_t(spec) else " without FAB-T")
  if name == "square":
    return f"Square-{spec.get('queries')}"
  if name == "fgsm":
    return "FGSM"
  return f"{STAGE_LABELS.get(name, name.upper())}-{spec.get('steps')}"


def specs(result):
  """{attack name: its spec dict} of an eval.json dict; evaluations that recorded no specs
  share their one attack dict."""
  attack = result.get("attack") or {}
  return attack.get("specs") or {
      name: dict(attack, name=name) for name in attack.get("attacks") or [attack.get("name")]}


def per_attack_label(result, key):
  """The header of a `per_attack` key of an eval.json dict: 'PGD-40', 'Square-5000',
  'AutoAttack', or for a stage of AutoAttack's cascade 'AutoAttack to APGD-T-100' (robust to
  every stage up to that one)."""
  name, _, stage = key.partition("/")
  spec = specs(result).get(name) or dict(result.get("attack") or {}, name=name)
  if not stage:
    return attack_label(spec)
  budget = spec.get("queries") if stage == "square" else spec.get("steps")
  return f"{attack_label(spec)} to {STAGE_LABELS.get(stage, stage)}-{budget}"


def worst_case_attacks(results):
  """'PGD-40, AutoAttack': the attacks of the results' per-example worst case, when every
  result ran the same ones; "each row's attacks" otherwise; '' without results."""
  lists = {tuple(per_attack_label(r, a) for a in (r.get("attack") or {}).get("attacks")
                 or [(r.get("attack") or {}).get("name")]) for r in results}
  if len(lists) == 1:
    return ", ".join(next(iter(lists)))
  return "each row's attacks" if lists else ""


def attack_details(spec):
  """The settings behind a label, e.g. '1 restart, step 0.01, 20 EOT samples' or, for
  AutoAttack, its stages and budgets."""
  name = spec.get("name") or "pgd"
  eot = [f"{spec['eot_samples']} EOT samples"] if spec.get("eot_samples", 1) > 1 else []
  if name.startswith("autoattack"):
    stages = ", ".join(STAGE_LABELS.get(s, s) for s in spec.get("stages", ()))
    return "; ".join(filter(None, [stages, f"{spec.get('steps')} iterations, Square "
                                           f"{spec.get('queries')} queries", *eot]))
  if name in ("square", "fgsm"):
    return ", ".join(eot)
  restarts = spec.get("restarts", 1)
  step = [f"step {spec['step_size']:g}"] if name == "pgd" and spec.get("step_size") else []
  return ", ".join([f"{restarts} restart{'s' if restarts > 1 else ''}", *step, *eot])
