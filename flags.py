"""All command-line flags of anp (absl). Only this module and main.py read FLAGS."""

from absl import flags

from anp.methods import METHODS

from anp.config import (ADMM_LOSSES, ATTACKS, BIAS_INITS, DATASETS, DEFENSES,
                        HYDRA_GRANULARITIES, HYDRA_OBJECTIVES, HYDRA_OPTIMIZERS, HYDRA_SCORES,
                        HYDRA_STAGES, PREPROCESS, SAP_GRADIENTS, STRATEGIES, Config)

MODES = ("train", "eval", "prune", "export", "report", "quickstart")


class Range(flags.FloatParser):
  """A float in an interval whose ends may be open; --help states it ("a number > 0", "a number
  in [0, 1)"), and values outside it are refused while parsing."""

  def __init__(self, low=None, high=None, open_low=False, open_high=False):
    super().__init__(low, high)
    self.open_low, self.open_high = open_low, open_high
    if low is not None and high is not None:
      self.syntactic_help = (f"a number in {'(' if open_low else '['}{low:g}, {high:g}"
                             f"{')' if open_high else ']'}")
    elif low is not None:
      self.syntactic_help = f"a number {'>' if open_low else '>='} {low:g}"

  def is_outside_bounds(self, val):
    return (super().is_outside_bounds(val)
            or (self.open_low and val == self.lower_bound)
            or (self.open_high and val == self.upper_bound))


def define_float(name, default, help_text, low=None, high=None, open_low=False,
                 open_high=False):
  """A float flag in `Range(low, high, open_low, open_high)`."""
  flags.DEFINE(Range(low, high, open_low, open_high), name, default, help_text,
               serializer=flags.ArgumentSerializer())


# What to do, on what.
flags.DEFINE_enum("mode", "train", MODES, "What to do.")
flags.DEFINE_enum("dataset", "mnist", list(DATASETS),
                  "Data set; mnist/fashion_mnist use LeNet5-Caffe, cifar10/cifar100 VGG-16.")
flags.DEFINE_enum("method", "anp_vs", METHODS,
                  "standard: clean training; at: PGD adversarial training; trades: TRADES "
                  "(Zhang et al. 2019); bp: Bayesian "
                  "pruning (masks, clean data); anp: masks + PGD; anp_vs: anp + "
                  "vulnerability suppression; at_bnn: Adv-BNN (Liu et al. 2019), PGD "
                  "training of a mean-field Gaussian Bayesian network; hydra: HYDRA "
                  "(Sehwag et al. 2020), robust pruning by learned importance scores, or LWM "
                  "with --hydra_scores=magnitude; "
                  "admm: ADMM pruning (Ye et al. 2019); awt: AWT's ticket search (Shi et al. "
                  "2022) as adversarial Neural Tangent Transfer, then --method=hydra "
                  "--hydra_stage=finetune.")
flags.DEFINE_string("data_dir", None,
                    "Folder holding the official raw archives (MNIST idx .gz, CIFAR binary "
                    "batches, plain or .gz), e.g. ../shared/data; without them TFDS is tried.")
flags.DEFINE_string("model_dir", "runs/default",
                    "Run directory: checkpoints, config.json, logs, eval.json/eval.md. "
                    "--mode=eval also accepts a SavedModel directory or a checkpoint "
                    "(directory or prefix) of the original TF1 code.")
flags.DEFINE_string("init_from", None,
                    "Run directory or checkpoint prefix (ours or the original TF1 code's) whose "
                    "weights start training.")
flags.DEFINE_enum("preprocess", "pixel", PREPROCESS,
                  "pixel: attacks and eps in [0,1] pixel space, normalisation inside the "
                  "model; original: per-image standardisation before the network and eps in "
                  "standardised units, as the ICML code.")
flags.DEFINE_integer("seed", 0, "Random seed (Python, NumPy, TF).", lower_bound=0)
flags.DEFINE_enum("bias_init", "glorot", list(BIAS_INITS),
                  "Initial biases of conv/dense layers. glorot: U(+-sqrt(3/n)) as the ICML "
                  "code (TF1's default initializer); zeros: the Keras default.")

# Training.
flags.DEFINE_integer("epochs", 200, "Training epochs.", lower_bound=1)
flags.DEFINE_integer("steps_per_epoch", None, "Batches per epoch (default: a full pass).",
                     lower_bound=1)
flags.DEFINE_integer("batch_size", 64, "Batch size.", lower_bound=1)
define_float("init_lr", 1e-2, "Learning rate of the masks (weights use 0.1x).",
             low=0, open_low=True)
define_float("adv_weight", 2.0, "w: weight of the adversarial cross-entropy.",
             low=0)
define_float("trades_beta", None,
             "TRADES: weight of KL(f(x) || f(x_adv)) against CE(x) (--method=trades, "
             "--hydra_objective=trades; default 1 MNIST, Fashion-MNIST as the authors' "
             "train_trades_mnist.py, 6 CIFAR).", low=0)
define_float("bnn_prior_sigma", None,
             "at_bnn: standard deviation sigma_0 of the N(0, sigma_0^2) prior of every "
             "weight (default 0.05).", low=0, open_low=True)
define_float("bnn_init_sigma", None,
             "at_bnn: initial posterior standard deviation of every weight (default "
             "0.05).", low=0, open_low=True)
flags.DEFINE_integer("bnn_ensemble", 20,
                     "at_bnn: weight samples whose softmax outputs are averaged for a "
                     "prediction (--mode=eval and --mode=export).", lower_bound=1)
define_float("weight_decay", None,
             "Weight of the L2 penalty (sum of squares / 2); default 1e-4, but with the "
             "CE(x_adv) loss of the ADMM code 1e-6 for --method=admm (its SGD's) and 0 for "
             "--hydra_objective=adv (its retraining's Adam has none).", low=0)
define_float("beta", None,
             "Weight of KL/N (default per dataset: 4, 2, 1; bp and at_bnn (alpha): 1).",
             low=0)
define_float("lambda_vs", None,
             "Weight of the vulnerability suppression loss (default per dataset).",
             low=0)
define_float("thres", 1e-3, "E[pi] at or below which a unit is pruned.", low=0, high=1,
             open_high=True)
flags.DEFINE_boolean("jit_compile", False,
                     "Compile the train step with XLA (--strategy=default; for GPUs: on "
                     "this CPU it is ~10x slower).")
flags.DEFINE_boolean("compact_attack", True,
                     "Craft PGD (training and --mode=eval) on the network without its pruned "
                     "units, masks folded into the weights: same logits up to float rounding, "
                     "faster as units are pruned. --nocompact_attack: through the masked "
                     "layers, as the ICML code.")
flags.DEFINE_enum("train_attack_dtype", "float32", ["float32", "bfloat16"],
                  "Type of the training attack's forward and backward passes (LeNet5's "
                  "compact attack only). bfloat16: 1.15x faster unpruned step under "
                  "--strategy=cpu_split on a CPU with AVX-512 BF16, no gain once pruned; "
                  "x_adv, the losses and the weight updates stay float32. Evaluation attacks "
                  "are always float32.")
flags.DEFINE_integer("checkpoint_every", None,
                     "Also checkpoint every N training steps (default: 500 for LeNet, 50 for "
                     "VGG, a few minutes on 2 CPU cores); an interrupted run loses at most N.",
                     lower_bound=1)
flags.DEFINE_integer("val_examples", None,
                     "Test examples evaluated (clean and PGD) after each epoch (default 1000 "
                     "MNIST, 200 CIFAR: PGD on VGG-16 costs ~65 s per 1000 on 2 cores).",
                     lower_bound=0)

# HYDRA (--method=hydra): pretrain (--method=at or trades) -> prune -> finetune, chained by
# --init_from.
flags.DEFINE_enum("hydra_stage", "prune", HYDRA_STAGES,
                  "prune: weights frozen, importance scores trained with the robust loss "
                  "(--init_from a pretrained run); finetune: scores frozen, the kept weights "
                  "trained (--init_from the prune run, or the pretrained run for LWM).")
flags.DEFINE_enum("hydra_scores", "learned", HYDRA_SCORES,
                  "learned: HYDRA's trained scores; magnitude: scores = the weights' "
                  "magnitudes, never trained (LWM, least-weight-magnitude pruning; finetune "
                  "stage only).")
flags.DEFINE_enum("hydra_granularity", "weight", HYDRA_GRANULARITIES,
                  "weight: a score per weight, top-k per layer (HYDRA's; the export keeps "
                  "dense shapes with zeros); channel: a score per unit / channel at the mask "
                  "sites, top-k per site (the export is physically smaller).")
flags.DEFINE_enum("hydra_objective", "trades", HYDRA_OBJECTIVES,
                  "Robust loss of both HYDRA stages: trades (HYDRA's adversarial trainer, "
                  "--trades_beta), at (PGD-AT as --method=at, --adv_weight) or adv (CE(x_adv) "
                  "alone: the ADMM code's retraining after --method=admm); use the "
                  "pretrained run's.")
flags.DEFINE_enum("hydra_optimizer", "adam", HYDRA_OPTIMIZERS,
                  "HYDRA stages' optimizer: adam (Adam, x0.1 at 50% and 70% of training, as "
                  "every unmasked method) or sgd (the reference's: SGD momentum 0.9, cosine "
                  "decay per epoch, lr * (1 + cos((e - 1) / epochs * pi)) / 2 in 0-based epoch e).")
define_float("hydra_lr", None, "HYDRA: initial learning rate (default 1e-3 adam; sgd "
             "0.1 prune, 0.01 finetune, the reference's).", low=0, open_low=True)
define_float("prune_ratio", 0.9,
             "HYDRA, ADMM and AWT: fraction of each layer's weights (or units) removed; "
             "HYDRA's own k is the fraction kept, 1 - prune_ratio.", low=0, high=1, open_high=True)

# ADMM (--method=admm): adversarial training pulled towards per-layer top-k sparse kernels;
# then hard prune + masked retrain = --method=hydra --hydra_stage=finetune
# --hydra_scores=magnitude --init_from=<the admm run>.
define_float("admm_rho", 1e-3, "ADMM: initial penalty rho, x1.3 at every Z/U update.",
             low=0, open_low=True)
flags.DEFINE_integer("admm_every", None, "ADMM: epochs between Z/U updates (default 4 MNIST, "
                     "20 CIFAR).", lower_bound=1)
flags.DEFINE_enum("admm_loss", "adv", ADMM_LOSSES,
                  "ADMM's data term: adv = CE(x_adv), the authors' (adv_main.py); mixed = "
                  "--method=at's (CE(x) + w CE(x_adv)) / (1 + w), --adv_weight.")

# AWT (--method=awt, anp/awt.py): the ticket search at initialisation (or from --init_from);
# then adversarial training of the ticket = --method=hydra --hydra_stage=finetune
# --init_from=<the awt run>, same --prune_ratio.
define_float("awt_kernel_weight", 1e-3,
             "AWT: weight of the NTK distance mean((Theta_s - Theta_t)^2) (NTT's 1e-3).",
             low=0)
define_float("awt_l2", 1e-5, "AWT: weight of ||m * W||^2 / density (NTT's 1e-5).",
             low=0)
flags.DEFINE_integer("awt_ntk_examples", 8,
                     "AWT: examples of each half of the batch in the empirical NTK.",
                     lower_bound=1)
flags.DEFINE_integer("awt_remask_every", 100,
                     "AWT: steps between re-masks (mask := per-layer top-k of |W|; NTT's 100).",
                     lower_bound=1)

# Attacks.
define_float("eps", None, "L-inf radius (default per dataset: 0.3 MNIST, 0.03 CIFAR).",
             low=0)
define_float("step_size", None, "PGD step size (default 0.01 MNIST, 0.007 CIFAR).",
             low=0, open_low=True)
flags.DEFINE_integer("train_attack_steps", None,
                     "PGD steps in training (default 20 MNIST, 10 CIFAR; 40 MNIST for TRADES' "
                     "loss and ADMM's CE(x_adv), as their authors' MNIST runs).", lower_bound=1)
flags.DEFINE_integer("attack_steps", 40,
                     "Attack iterations in evaluation (every --attack, APGD included).",
                     lower_bound=0)
flags.DEFINE_integer("eval_batch", 256, "Examples per batch of --mode=eval's attacks. Larger "
                     "batches run Square's and AutoAttack's many small iterations faster "
                     "(bench/autoattack.py).", lower_bound=1)
flags.DEFINE_string("eval_dir", None, "Folder --mode=eval writes eval.json and eval.md into "
                    "(default: --model_dir, or the folder of a checkpoint prefix).")
flags.DEFINE_integer("eval_examples", None, "Evaluate on the first N test examples.",
                     lower_bound=1)
flags.DEFINE_string("attack", "pgd", f"White-box attack of --mode=eval: one of "
                    f"{', '.join(ATTACKS)}, strongest (pgd, apgd-ce, apgd-dlr, cw and square), or "
                    "a comma-separated list such as pgd,autoattack; several attacks give the "
                    "per-example worst case and each one's accuracy. fab-t: targeted L-inf FAB "
                    "(9 targets, --attack_steps iterations). autoattack: APGD-CE, APGD-T, FAB-T "
                    "and Square as a cascade (Croce & Hein 2020) with the published budget "
                    "(100 iterations, 9 targets); autoattack-rand: APGD-CE and APGD-DLR with 20 "
                    "EOT samples, for random models.")
flags.DEFINE_integer("square_queries", 5000, "Queries of the Square attack (--attack=square, "
                     "and the Square stage of autoattack).", lower_bound=1)
flags.DEFINE_integer("restarts", 1, "Random restarts of the attack.", lower_bound=1)
flags.DEFINE_integer("eot_samples", None,
                     "Gradient samples per step (expectation over transformation) for "
                     "stochastic models (default 1; 10 for an at_bnn model).", lower_bound=1)
flags.DEFINE_string("source_model_dir", None,
                    "Run directory of the source model of the black-box (transfer) attack.")
flags.DEFINE_enum("defense", "none", DEFENSES,
                  "Inference-time defence of --mode=eval: sap = Stochastic Activation Pruning "
                  "(Dhillon et al. 2018) after every latent activation; random, so attack it "
                  "with --eot_samples.")
define_float("sap_frac", 1.0, "SAP draws ceil(sap_frac x units) samples per layer.",
             low=0, open_low=True)
flags.DEFINE_enum("sap_gradient", "full", SAP_GRADIENTS,
                  "Gradient of --defense=sap for the attacks of --mode=eval: full = through "
                  "SAP's probabilities p = |h| / sum |h| and scales 1 / (1 - (1 - p)^r) (the "
                  "kept units are a constant of the sample); stopped = p and the scales are "
                  "constants (the gradient is the kept units' scale).")
flags.DEFINE_boolean("sanity_checks", False,
                     "Run the gradient-masking sanity checks of Carlini et al. (2019).")

# Devices: --mode=train and --mode=eval.
flags.DEFINE_enum("strategy", "default", STRATEGIES,
                  "tf.distribute strategy. default: one device, no strategy; mirrored: all "
                  "GPUs of this machine (MirroredStrategy); cpu_split: this CPU as "
                  "--cpu_replicas logical devices, one thread per op each (faster LeNet on a "
                  "few cores); multi_worker: the machines of TF_CONFIG "
                  "(MultiWorkerMirroredStrategy); tpu: TPUStrategy. --batch_size is the "
                  "global batch, split across replicas.")
flags.DEFINE_integer("cpu_replicas", 2, "Replicas of --strategy=cpu_split (logical CPU devices).",
                     lower_bound=1)
flags.DEFINE_boolean("mixed_precision", False,
                     "Keras mixed precision: mixed_float16 with a GPU (loss scaling on), "
                     "mixed_bfloat16 on CPU/TPU; masks, losses and optimizers stay float32.")
flags.DEFINE_boolean("deterministic_ops", False,
                     "tf.config.experimental.enable_op_determinism(): bit-reproducible GPU "
                     "kernels (slower); CPU runs are already reproducible.")

# Prune / export / report.
flags.DEFINE_string("export_dir", None, "Where --mode=prune/export write the SavedModel.")
flags.DEFINE_string("runs", None, "Comma-separated run directories for --mode=report.")
flags.DEFINE_string("report_dir", None, "Output folder of --mode=report.")

FLAGS = flags.FLAGS


def config_from_flags():
  """The Config that the parsed flags describe."""
  names = {f for f in Config.__dataclass_fields__}
  return Config(**{name: FLAGS[name].value for name in names if name in FLAGS})
