"""Training methods, one object each (`anp.methods.base.Method`), registered in `REGISTRY`.

A method's file holds its maths and its `Method` subclass: defaults, validation, the keys of
a run's identity, the network it needs, its trainer and hooks, its evaluation and export
wrappers and its name in tables. Everything else asks the method object found by `get`.
Adding a method: its file, one line below, its tests.

  standard, at, trades   `anp.methods.standard`
  bp, anp, anp_vs        `anp.methods.masked` (beta-Bernoulli unit masks)
  at_bnn                 `anp.methods.bnn` (Adv-BNN)
  hydra                  `anp.methods.hydra` (HYDRA and LWM)
  admm                   `anp.methods.admm`
  awt                    `anp.methods.awt` (AWT's ticket search)

Modules load on first use, so listing the names (flags, validation) imports no TensorFlow.
"""

import importlib

# --method value -> "module:class" (the order of --help).
REGISTRY = {
    "standard": "standard:Standard",
    "at": "standard:AdversarialTraining",
    "trades": "standard:Trades",
    "bp": "masked:BayesianPruning",
    "anp": "masked:AdversarialPruning",
    "anp_vs": "masked:AdversarialPruningVS",
    "at_bnn": "bnn:AdvBNN",
    "hydra": "hydra:Hydra",
    "admm": "admm:ADMM",
    "awt": "awt:AWT",
}
METHODS = tuple(REGISTRY)
_LOADED = {}


def get(name):
  """The method object of a --method value (ValueError for an unknown one)."""
  if name not in REGISTRY:
    raise ValueError(f"Expected a method in {', '.join(METHODS)}. Received: {name!r}")
  if name not in _LOADED:
    module, cls = REGISTRY[name].split(":")
    _LOADED[name] = getattr(importlib.import_module(f"anp.methods.{module}"), cls)()
  return _LOADED[name]


def find(name):
  """The method object of `name`, or None when it names no method (e.g. None)."""
  return get(name) if name in REGISTRY else None
