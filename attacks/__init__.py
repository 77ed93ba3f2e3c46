"""Adversarial attacks: each one a pure function running one compiled loop."""
