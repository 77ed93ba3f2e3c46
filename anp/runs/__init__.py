"""Run directories and checkpoints: building the network a config describes, finding,
restoring and checking checkpoints (`rundir`), loading any evaluable model: a run, an
original TF1 checkpoint or a SavedModel (`loading`), reading the authors' TF1 checkpoints
(`original_ckpt`), and how a run was made (`provenance`, no TensorFlow)."""
