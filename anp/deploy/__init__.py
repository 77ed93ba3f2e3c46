"""Making pruned models really smaller: the compact model without its pruned units (`compact`),
--mode=prune / --mode=export SavedModels for TF Serving (`export`), and the efficiency
figures, the paper's formulas beside measured parameters and FLOPs (`efficiency`)."""
