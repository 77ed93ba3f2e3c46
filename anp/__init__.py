"""anp: adversarially robust and sparse neural networks (ANP-VS, ICML 2020) in TF2/Keras."""
