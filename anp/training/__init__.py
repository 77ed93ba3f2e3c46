"""Training: the resumable --mode=train loop (`train`), the Keras model whose train_step makes
adversarial examples and applies the optimizers (`model.AdversarialTrainer`), the objectives
(`objectives`: what a method crafts and minimises), the losses (`losses`), devices and
strategies (`distribute`) and the progress line (`progress`). What each method trains is its
own (`anp.methods`)."""
