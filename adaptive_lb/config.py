"""Every knob of a run, as frozen dataclasses (the one home for hyperparameters).

YAML files in ``configs/`` mirror these classes; reading, overriding and saving them is
``adaptive_lb/config_io.py`` (its functions are importable from here too). Ranges live next to the field
(``knob(default, ge=..., choices=...)``, ``adaptive_lb/config_fields.py``) so that the check and the
documentation cannot drift apart.

Every section checks itself when built, from YAML or in Python (``Section.__post_init__``): each field's type,
range or choices and finiteness, then the combinations of knobs that would silently do nothing or correct twice.
A problem is a one-line ``ConfigError`` naming the dotted key; a knob that does nothing only warns
(``ConfigWarning``).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, ClassVar

from adaptive_lb.config_fields import Section, knob
from adaptive_lb.errors import ConfigError, ConfigWarning


@dataclass(frozen=True)
class SyntheticConfig(Section):
    """Small images drawn from overlapping class distributions, for fast tests."""

    path: ClassVar[str] = "data.synthetic"

    num_classes: int = knob(10, ge=2, le=1000)  # number of classes (up to ImageNet's 1,000)
    per_class: int = knob(300, ge=4)           # training images per class (the test split gets a third)
    image_size: int = knob(28, ge=8)           # side of the square 1-channel images, pixels
    noise: float = knob(0.35, ge=0.0)          # pixel noise std, on the [0, 1] intensity scale
    difficulty_spread: float = knob(1.0, ge=0.0)  # class c's noise is noise * (1 + spread * c / (C-1))


OWN_DATASETS = ("imagefolder", "csv")  # your own images (adaptive_lb/data/images.py)
OWN_DATA_KEYS = ("train_csv", "test_csv", "image_size", "channels", "test_fraction", "cache_dir", "memory_limit_gb")
NAMES_COUNTRIES = ("GB", "US", "IE", "CA", "ES", "MX", "AR", "DE", "AT", "JP", "IN", "RU")


@dataclass(frozen=True)
class NamesConfig(Section):
    """Full names -> nationality, drawn from the names-dataset package (adaptive_lb/data/names.py)."""

    path: ClassVar[str] = "data.names"

    # ISO 3166 alpha-2 codes, one class each, in this order. Default: three language-sharing groups
    # (English GB/US/IE/CA; Spanish ES/MX/AR; German DE/AT) and three distinct ones (the package has no AU)
    countries: tuple[str, ...] = NAMES_COUNTRIES
    per_class: int = knob(1500, ge=4)          # training names per country (the held-out split comes from them)
    test_per_class: int = knob(500, ge=1)      # test names per country
    top_k: int = knob(1000, ge=10)             # candidates: a country's k most frequent first and last names
    min_share: float = knob(0.02, ge=0.0, lt=1.0)  # drop a candidate when the country holds less than this
    # share of the name's bearers (the package's per-country shares): removes names foreign to the country
    max_len: int = knob(24, ge=5)              # characters of a full name (longer ones are not drawn)

    def check_combinations(self) -> None:
        codes = self.countries
        bad = [c for c in codes if not (len(c) == 2 and c.isascii() and c.isalpha() and c.isupper())]
        if bad or len(set(codes)) != len(codes) or len(codes) < 2:
            raise ConfigError(f"data.names.countries: need two or more distinct ISO alpha-2 codes such as GB, US; "
                              f"got {list(codes)}")


@dataclass(frozen=True)
class DataConfig(Section):
    """Which dataset, and how the train / held-out / test splits are carved."""

    path: ClassVar[str] = "data"

    name: str = knob("fashion_mnist", choices=("fashion_mnist", "cifar10", "cifar100", "synthetic", "names",
                                               *OWN_DATASETS))
    root: str = ""                 # folder holding the files; "" = ./data, then the Debian folder;
    # imagefolder: DIR with train/<class>/<image> (and test/<class>/<image> when there is a test set)
    download: bool = False         # let torchvision download missing files (needs internet)
    heldout_fraction: float = knob(0.1, gt=0.0, lt=1.0)  # share of each class's training images held out
    heldout_balanced: bool = True  # same held-out count for every class (fraction of the smallest class)
    # share of each class's held-out images set aside as the `select` split: the post-hoc calibration fit, the
    # Optuna objective and guard, any choice of default read it; the rest (`control`, reported as "heldout") is
    # what the controller reads every epoch. Disjoint, stratified. 0 = no select split (calibration then fits
    # on the control split, in-sample)
    select_fraction: float = knob(0.5, ge=0.0, lt=1.0)
    subset_per_class: int = knob(0, ge=0)       # keep N training images per class before the split; 0 = all
    test_subset_per_class: int = knob(0, ge=0)  # keep N test images per class; 0 = all
    long_tail: str = knob("none", choices=("none", "exp", "step"))  # profile applied to the training part only
    imbalance_ratio: float = knob(1.0, ge=1.0)  # rho = n_max / n_min of the long-tail profile
    step_minor_fraction: float = knob(0.5, gt=0.0, lt=1.0)  # share of classes that are minor (step profile)
    synthetic: SyntheticConfig = knob(SyntheticConfig())     # used when name = synthetic
    names: NamesConfig = knob(NamesConfig())                 # used when name = names
    # re-sampling of the training part, redrawn every epoch (adaptive_lb/data/samplers.py):
    # oversample = every class drawn up to the largest count (with replacement), undersample = every class
    # cut to the smallest count, oversample_aug = oversample with the extra copies augmented at copy_aug
    sampler: str = knob("none", choices=("none", "oversample", "undersample", "oversample_aug"))
    copy_aug: float = knob(0.5, gt=0.0, le=1.0)  # augmentation intensity of the extra copies (oversample_aug)
    # your own images (imagefolder | csv; adaptive_lb/data/images.py):
    train_csv: str = ""            # csv: CSV with columns path,label (paths relative to the CSV's folder)
    test_csv: str = ""             # csv: the same for the test set; "" = carve one (test_fraction)
    image_size: int = knob(32, ge=4)           # images are resized to image_size x image_size pixels
    channels: int = knob(3, choices=(1, 3))    # 1 = grey, 3 = RGB
    test_fraction: float = knob(0.2, gt=0.0, lt=1.0)  # share of each class carved as the test split when the
    # data has no test set (the same images for every train.seed, as a shipped test set would be)
    cache_dir: str = ""            # decoded images are cached here; "" = $XDG_CACHE_HOME/adaptive_lb or
    # ~/.cache/adaptive_lb
    memory_limit_gb: float = knob(0.0, ge=0.0)  # refuse a set whose decoded images exceed this; 0 = half of
    # the memory available when the run starts

    def check_combinations(self) -> None:
        changed = [k for k in OWN_DATA_KEYS if getattr(self, k) != getattr(DataConfig, k)]
        if self.name not in OWN_DATASETS and changed:
            warnings.warn(f"data.{', data.'.join(changed)}: read by data.name={' and '.join(OWN_DATASETS)} only, "
                          f"nothing with data.name={self.name}; drop them or set data.name", ConfigWarning,
                          stacklevel=2)
        if self.sampler != "oversample_aug" and self.copy_aug != DataConfig.copy_aug:
            warnings.warn(f"data.copy_aug={self.copy_aug} does nothing with data.sampler={self.sampler}: only "
                          "oversample_aug augments extra copies; set data.sampler=oversample_aug or drop copy_aug",
                          ConfigWarning, stacklevel=2)


@dataclass(frozen=True)
class ModelConfig(Section):
    """The classifier."""

    path: ClassVar[str] = "model"

    name: str = "small_cnn"        # small_cnn | resnet20 | resnet32 | tv:<torchvision model name> | char_gru (names)
    width: int = knob(24, ge=4)    # channels of the first stage of small_cnn (doubles per stage);
    # char_gru: hidden units per direction
    embed_dim: int = knob(32, ge=1)  # char_gru: size of the character embedding
    layers: int = knob(1, ge=1)      # char_gru: stacked bidirectional GRU layers
    head: str = knob("linear", choices=("linear", "cosine"))  # cosine: logits are cos(feature, class vector)
    # in [-1, 1], as LDAM's normed linear layer; pair it with loss.scale (~30)

    def check_combinations(self) -> None:
        if self.head == "cosine" and self.name.startswith("tv:"):
            raise ConfigError("model.head=cosine works with small_cnn and the CIFAR ResNets, not torchvision models")


@dataclass(frozen=True)
class OptimConfig(Section):
    """Optimiser and learning-rate schedule (stepped once per batch)."""

    path: ClassVar[str] = "optim"

    name: str = knob("sgd", choices=("sgd", "adamw"))
    lr: float = knob(0.05, gt=0.0)              # peak learning rate
    momentum: float = knob(0.9, ge=0.0, lt=1.0)  # SGD momentum (AdamW: beta1)
    nesterov: bool = True                       # Nesterov momentum (SGD only)
    weight_decay: float = knob(5e-4, ge=0.0)    # L2 (SGD) or decoupled (AdamW) decay, per step
    schedule: str = knob("cosine", choices=("cosine", "onecycle", "constant"))
    warmup_epochs: float = knob(0.0, ge=0.0)    # linear warm-up for cosine/constant, epochs


LOGGERS = ("tensorboard",)  # train.loggers (adaptive_lb/integrations/tensorboard.py)


@dataclass(frozen=True)
class TrainConfig(Section):
    """The training loop."""

    path: ClassVar[str] = "train"

    epochs: int = knob(10, ge=1)                 # passes over the training part
    batch_size: int | str = knob(256, ge=1, words=("auto",))  # images per optimiser step; auto = training
    # images per epoch // 50, within [16, 256] (>= 50 steps per epoch on small sets); the run's config.yaml
    # records the number chosen
    eval_batch_size: int = knob(1024, ge=1)      # images per forward pass when evaluating
    seed: int = knob(0, ge=0)                    # seeds init, shuffling and splits: same seed, same run
    device: str = "auto"                         # auto (cuda > mps > cpu) | cpu | cuda | cuda:N | mps
    amp: str = knob("auto", choices=("auto", "bf16", "off"))             # auto = bf16 autocast on CUDA only
    channels_last: str = knob("auto", choices=("auto", "on", "off"))     # auto = on for CUDA and CPU (faster convs)
    log_every: int = knob(50, ge=1)              # batches between loss read-outs (host sync + NaN check)
    threads: int = knob(0, ge=0)                 # CPU threads for torch; 0 = torch's default
    test_every: int = knob(1, ge=0)  # evaluate the test split every N epochs (reported only); the last epoch
    # of a run always; 0 = the last epoch only (tune trials use 0: they never read the test split)
    raw_every: int = knob(1, ge=0)   # with EMA on, also evaluate the live model every N epochs (the "raw" block
    # of metrics.jsonl, reported only: ~4 % of a Fashion-MNIST epoch); the last epoch of a run always; 0 = last only
    # EMA of the weights and BatchNorm statistics, per optimiser step: ema <- d*ema + (1-d)*live after every
    # step; the EMA model is evaluated, read by the controller, saved and reported; 0 = off. Half-life in
    # steps = ln 0.5 / ln d (0.995: 138 steps, 0.65 of a 211-step Fashion-MNIST epoch)
    ema_decay: float = knob(0.0, ge=0.0, lt=1.0)
    ema_warmup: bool = True  # d_t = min(ema_decay, (1+t)/(10+t)) at step t: early steps forget the random init
    # self-distillation from the EMA model: loss += w * T^2 * KL(softmax(ema/T) || softmax(live/T)), the EMA's
    # soft labels of each training batch (an extra forward pass of the EMA model per step); 0 = off; needs EMA
    distill_weight: float = knob(0.0, ge=0.0)
    distill_temperature: float = knob(2.0, gt=0.0)  # T of the term above: higher = softer teacher labels
    # per-epoch loggers besides metrics.jsonl: tensorboard = per-class TPR, weights, intensities and offsets into
    # <run>/tensorboard/ (needs the tensorboard extra); [] = none
    loggers: tuple[str, ...] = ()

    def check_combinations(self) -> None:
        unknown = [name for name in self.loggers if name not in LOGGERS]
        if unknown or len(set(self.loggers)) != len(self.loggers):
            raise ConfigError(f"train.loggers: {list(self.loggers)} is not a list of distinct loggers; use any of "
                              f"{', '.join(LOGGERS)}, or [] for none")
        if self.distill_weight and self.ema_decay == 0.0:
            raise ConfigError(f"train.distill_weight={self.distill_weight:g} distils from the EMA model, and EMA is "
                              "off: set train.ema_decay (e.g. 0.995) or train.distill_weight=0")
        if self.ema_decay == 0.0 and not self.ema_warmup:
            warnings.warn("train.ema_warmup=false does nothing with train.ema_decay=0 (EMA off): set "
                          "train.ema_decay or drop ema_warmup", ConfigWarning, stacklevel=2)


@dataclass(frozen=True)
class LossConfig(Section):
    """The training loss; every loss also takes the controller's per-class weights and logit offsets."""

    path: ClassVar[str] = "loss"

    name: str = knob("ce", choices=("ce", "focal", "ldam", "logit_adjusted", "balanced_softmax"))
    gamma: float = knob(1.0, ge=0.0)   # focal: (1 - p_t)^gamma down-weights easy samples; 0 = CE
    max_m: float = knob(0.5, gt=0.0)   # ldam: margin of the rarest class (margins ~ n_c^(-1/4)), in logits
    tau: float = knob(1.0, ge=0.0)     # logit_adjusted: tau * log(prior) added to the training logits
    # (balanced_softmax is tau = 1)
    scale: float = knob(1.0, gt=0.0)   # s: training logits are multiplied by s (LDAM with a cosine head: 30)
    # how the weighted per-sample losses w[y_i] * l_i become the batch loss: mean = mean_i(w[y_i] l_i) (with
    # mean-one class weights, a balanced run's step size; on rho = 100 data the average w[y] is ~0.16, so 6x
    # smaller steps); weighted_mean = sum_i(w[y_i] l_i) / sum_i(w[y_i]), as F.cross_entropy(weight=w) and the
    # LDAM-DRW code (configs/methods/*.yaml say which form each published method used)
    reduction: str = knob("mean", choices=("mean", "weighted_mean"))


@dataclass(frozen=True)
class PosthocConfig(Section):
    """A correction fitted after training, on the held-out split (never the test split)."""

    path: ClassVar[str] = "posthoc"

    method: str = knob("none", choices=("none", "equalise", "logit_adjust"))  # equalise: per-class logit
    # biases that even out held-out TPR; logit_adjust: subtract tau * log(training prior)
    tau: float = knob(1.0, ge=0.0)          # logit_adjust strength
    sweeps: int = knob(8, ge=1)             # equalise: coordinate-ascent sweeps over the classes' biases
    spread_weight: float | str = knob(1.0, ge=0.0, words=("auto",))  # equalise maximises mean(TPR) -
    # spread_weight * std(TPR) on held-out: large = even at any cost, small = accuracy first, 0 = the raw model
    # (no bias: the frontier's spread weight 0, what select chose for the Fashion-MNIST loop); auto = chosen per
    # run on `select`, cross-fitted, among 0 (no bias) and `candidates` (frontier.choose_spread_weight): the
    # best worst-class TPR whose accuracy stays within `tolerance` of the raw model's. On a small select split
    # auto keeps the raw model when biases fitted on one half do not help the other
    candidates: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0)  # auto: spread weights tried besides 0, each > 0
    tolerance: float = knob(0.003, ge=0.0, le=1.0)  # auto: cross-fitted select accuracy a choice may give up

    def check_combinations(self) -> None:
        if not self.candidates or any(not c > 0 for c in self.candidates):
            raise ConfigError(f"posthoc.candidates: {list(self.candidates)} must be a non-empty list of spread "
                              "weights > 0 (0, the raw model, is always tried)")


AUG_OPS = ("flip", "affine", "brightness_contrast", "erasing", "noise")
TEXT_AUG_OPS = ("swap", "drop", "insert")  # character edits for text datasets (adaptive_lb/augment/text.py)
TEXT_DATASETS, TEXT_MODELS = ("names",), ("char_gru",)
TPR_CONTROLLERS = ("two_pass", "cdb", "damped")  # weights from held-out TPR: controller.weights, count_weights unread
PRIOR_LOSSES = ("logit_adjusted", "balanced_softmax", "ldam")  # built on the training class counts


@dataclass(frozen=True)
class AugmentConfig(Section):
    """Per-class augmentation: the controller sets each class's intensity in [0, 1]; 0 = none."""

    path: ClassVar[str] = "augment"

    backend: str = knob("tensor", choices=("tensor", "albumentations"))  # tensor: batched on the training
    # device (fast path); albumentations: per sample on CPU in DataLoader workers
    ops: tuple[str, ...] = AUG_OPS   # ops applied, each scaled by the intensity (adaptive_lb/augment/table.py);
    # text datasets take swap, drop, insert instead
    workers: int = knob(2, ge=0)     # DataLoader worker processes for the albumentations backend (0 = main)


@dataclass(frozen=True)
class ControllerConfig(Section):
    """What sets per-class loss weights, augmentation intensities and logit margins each epoch."""

    path: ClassVar[str] = "controller"

    name: str = knob("static", choices=("static", "two_pass", "cdb", "damped", "drw"))
    weights: tuple[float, ...] = ()  # fixed per-class loss weights for `static`, > 0; () = all ones (ERM)
    # weights from training class counts n_c (static, and drw after drw_epoch): inverse_freq n/(C n_c),
    # inverse_sqrt, effective_number (1-beta)/(1-beta^n_c); all normalised to mean 1 (weighting.py)
    count_weights: str = knob("none", choices=("none", "inverse_freq", "inverse_sqrt", "effective_number"))
    beta: float = knob(0.9999, ge=0.0, lt=1.0)  # effective_number's beta; 0 = all ones, -> 1 = inverse_freq
    # two_pass: the first pass's final held-out TPR per class when that pass was already run (the last record's
    # heldout.tpr in an ERM run's metrics.jsonl, same config and seed: pass 2 replays its seeds), so only the
    # second pass is trained; () = train both passes
    first_pass_tpr: tuple[float, ...] = ()
    drw_epoch: int = knob(0, ge=0)  # drw: epochs trained with unit weights before count_weights switch on;
    # 0 = 80 % of train.epochs (LDAM-DRW: 160 of 200)
    weight_fn: str = knob("power_ratio", choices=("power_ratio", "cdb", "exp_gap"))  # target W(tpr)
    exponent: float = knob(1.0, ge=0.0)       # p of power_ratio, tau of cdb, k of exp_gap (see weighting.py)
    damping: float = knob(0.5, gt=0.0, le=1.0)  # alpha: share of the step towards the target per epoch (1 = none)
    w_min: float = knob(0.2, gt=0.0)          # lower bound on a class weight; weights have mean 1, so <= 1
    w_max: float = knob(5.0, gt=0.0)          # upper bound on a class weight, >= 1
    warmup_epochs: int = knob(1, ge=0)        # epochs trained with the initial action before the first update
    integral_gain: float = knob(0.0, ge=0.0)  # k_i: weight of the accumulated gap (log-weight per unit; margins too)
    gap_scale: float = knob(0.05, gt=0.0)     # TPR gap that counts as one unit of error (held-out noise ~0.016)
    aug_gain: float = 0.0                     # g: intensity step per unit gap; > 0 = more aug for hard classes
    aug_init: float = knob(0.0, ge=0.0, le=1.0)  # starting intensity of every class
    margin_gain: float = knob(0.0, ge=0.0)    # target logit offset per unit gap (hard classes: lower train logits)
    margin_max: float = knob(2.0, gt=0.0)     # |offset| bound, in logits
    # actuators that change what the network learns (adaptive_lb/actuators.py), damped like the others:
    weight_law: str = knob("damped", choices=("damped", "dro"))  # damped: log w -> log W(tpr) (weight_fn);
    # dro: class-DRO, log q_c += dro_eta * (gap_c - dro_deadband)+, w = C((1-dro_floor) softmax(log q) + dro_floor/C)
    dro_eta: float = knob(0.15, ge=0.0)       # dro: log-weight step per unit gap per epoch
    dro_deadband: float = knob(0.0, ge=0.0)   # dro: gap (in gap_scale units) below which a class gains nothing
    dro_floor: float = knob(0.3, ge=0.0, le=1.0)  # dro: uniform share of the weights (1 = ERM)
    pair_gain: float = knob(0.0, ge=0.0)      # pairwise margin target per unit of symmetric confusion rate between
    # two classes (logits); 0 = off. Added to the other class's logit for samples of one class, in training only
    pair_deadband: float = knob(0.01, ge=0.0, lt=1.0)  # confusion rate below which a pair gets no margin
    pair_max: float = knob(1.0, gt=0.0)       # cap on a pairwise margin, logits
    aug_groups: str = knob("class", choices=("class", "cluster"))  # class: one intensity per class; cluster: one
    # per confusion cluster (classes joined by held-out confusion), so augmentation cannot tell confused classes apart
    cluster_threshold: float = knob(0.02, gt=0.0, lt=1.0)  # symmetric confusion rate that joins two classes
    bias_gain: float = knob(0.0, ge=0.0)      # integral law: each epoch the training offsets move by -bias_gain x
    # the control split's equalising biases (what calibration would add), bounded by margin_max; 0 = off
    # confused-pair mixup (SelMix-style, Ramasubramanian et al., ICLR 2024): a training image of a class i below the
    # mean TPR is blended with one of a class j it is confused with, x <- lam x + (1-lam) x_j, lam ~ U[mix_min, 1],
    # label kept i: moves the i/j boundary through the features, which no per-class bias can do. Probability per
    # image p_i = min(mix_cap, mix_gain x gap_i) (gap in gap_scale units), partner class j ~ the control split's
    # confusion row i; damped like the other actuators; 0 = off. Images only (not text)
    mix_gain: float = knob(0.0, ge=0.0)
    mix_cap: float = knob(0.5, ge=0.0, le=1.0)   # largest share of a class's images that are blended
    mix_min: float = knob(0.6, ge=0.0, le=1.0)   # smallest weight of an image's own content in a blend

    def check_combinations(self) -> None:
        if any(w <= 0 for w in self.weights):
            raise ConfigError("controller.weights: every weight must be finite and > 0")
        if any(not 0.0 <= t <= 1.0 for t in self.first_pass_tpr):
            raise ConfigError("controller.first_pass_tpr: every TPR must be in [0, 1]")
        if self.first_pass_tpr and self.name != "two_pass":
            raise ConfigError(f"controller.first_pass_tpr is read by controller.name=two_pass only, not "
                              f"{self.name}: drop it or use two_pass")
        if self.w_min > self.w_max:
            raise ConfigError(f"controller.w_min ({self.w_min}) is above controller.w_max ({self.w_max}): swap them")
        if not self.w_min <= 1.0 <= self.w_max:
            raise ConfigError(f"controller.w_min ({self.w_min}) must be <= 1 <= controller.w_max ({self.w_max}): "
                              "weights are renormalised to mean 1")
        if self.weights and self.count_weights != "none":
            raise ConfigError("controller.weights and controller.count_weights both set: keep one of them")
        if self.name == "drw" and self.count_weights == "none":
            raise ConfigError("controller drw needs controller.count_weights (e.g. effective_number) to switch to")
        if self.name in TPR_CONTROLLERS:  # they set weights from held-out TPR and never read these two
            for key, unset, used in (("count_weights", "none", self.count_weights != "none"),
                                     ("weights", "[]", bool(self.weights))):
                if used:
                    raise ConfigError(f"controller.{key} is ignored by controller.name={self.name}, which sets "
                                      f"weights from held-out TPR: use controller.name=static (or drw), or "
                                      f"controller.{key}={unset}")


@dataclass(frozen=True)
class RunConfig(Section):
    """A whole run; ``configs/*.yaml`` mirror this."""

    name: str = "run"              # label used in default run-dir names
    data: DataConfig = knob(DataConfig())
    model: ModelConfig = knob(ModelConfig())
    optim: OptimConfig = knob(OptimConfig())
    train: TrainConfig = knob(TrainConfig())
    controller: ControllerConfig = knob(ControllerConfig())
    augment: AugmentConfig = knob(AugmentConfig())
    loss: LossConfig = knob(LossConfig())
    posthoc: PosthocConfig = knob(PosthocConfig())

    def check_combinations(self) -> None:
        c = self.controller
        if c.name == "drw" and not 0 <= c.drw_epoch < self.train.epochs:
            raise ConfigError(f"controller.drw_epoch ({c.drw_epoch}) must be below train.epochs "
                              f"({self.train.epochs}) so that the switch happens during the run; 0 = 80 %")
        if self.loss.name in PRIOR_LOSSES and self.data.sampler != "none":
            raise ConfigError(f"loss.name={self.loss.name} with data.sampler={self.data.sampler} corrects for the "
                              "class counts twice (the loss uses the training counts the sampler evens out): "
                              "use data.sampler=none or loss.name=ce")
        if c.name == "damped" and c.warmup_epochs >= self.train.epochs:
            warnings.warn(f"controller.warmup_epochs ({c.warmup_epochs}) >= train.epochs ({self.train.epochs}): the "
                          "closed loop never acts and the run is ERM; lower controller.warmup_epochs",
                          ConfigWarning, stacklevel=2)
        self._check_modality()

    def _check_modality(self) -> None:
        """Images and text need their own models and augmentation ops."""
        text = self.data.name in TEXT_DATASETS
        ops = TEXT_AUG_OPS if text else AUG_OPS
        unknown = [op for op in self.augment.ops if op not in ops]
        if unknown:
            what = f"data.name={self.data.name} takes" if text else "use any of"
            raise ConfigError(f"augment.ops: unknown op(s) {', '.join(unknown)}; {what} {', '.join(ops)}")
        if text != (self.model.name in TEXT_MODELS):
            fix = f"model.name={TEXT_MODELS[0]}" if text else "an image model such as small_cnn"
            raise ConfigError(f"model.name={self.model.name} does not fit data.name={self.data.name}: use {fix}")
        if text and self.augment.backend != "tensor":
            raise ConfigError(f"augment.backend={self.augment.backend} augments images only: "
                              "text takes augment.backend=tensor")


_IO = ("load_config", "load_raw", "apply_override", "from_dict", "to_dict", "dump_config", "leaf_fields",
       "check_field_value")


def __getattr__(name: str) -> Any:
    """The file functions live in ``adaptive_lb/config_io.py``; ``from adaptive_lb.config import load_config`` works."""
    if name in _IO:
        from adaptive_lb import config_io

        return getattr(config_io, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
