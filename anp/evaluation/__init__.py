"""Evaluation: --mode=eval (`evaluate`: the paper's columns, eval.json), the compiled attack and
evaluation step over a data set (`eval_net`), the white-box attacks and their budgets
(`attack_specs`), the gradient-masking checks (`sanity`), the SAP defence (`sap`), the paper's
table (`tables`), attack names (`labels`) and --mode=report (`report`: tables and plots of
several runs)."""
