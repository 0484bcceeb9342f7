"""Every training option with its one default, and the named recipes: the single source the API, the CLI
(its options and help) and the README table are made from. Light to import: no torch here."""

from __future__ import annotations

from dataclasses import dataclass, fields
from enum import Enum

from .console import GraspcheckError

BALANCE_MODES = ("loss", "sampler", "none")
OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("constant", "cosine")
MIN_IMG_SIZE = 32
AUGMENT_CHOICES = ("none", "light", "strong")  # "none" and transforms.AUGMENT_RANGES (tested); here so the CLI need not import torch


def _choice(name: str, values: tuple[str, ...]) -> type[Enum]:
    """The choices of an option as a str Enum: the CLI's --help lists them and refuses others by itself."""
    return Enum(name, {value: value for value in values}, type=str)


Augment = _choice("Augment", AUGMENT_CHOICES)
Balance = _choice("Balance", BALANCE_MODES)
Optimizer = _choice("Optimizer", OPTIMIZERS)
Schedule = _choice("Schedule", SCHEDULES)


@dataclass
class TrainConfig:
    """Every recipe choice. The defaults are graspcheck's default recipe, chosen by measurement on the
    simulated dataset (benchmarks/README.md, "Recipes"); recipe="seed" is the seed notebook's."""

    data: str
    recipe: str = "default"
    model: str = "efficientnet_lite0"
    pretrained: bool = True  # start from the registry's pretrained weights (ImageNet); False: random init
    freeze_backbone: bool = False  # train the classifier only (a linear probe: fastest, less accurate)
    epochs: int = 4
    batch_size: int = 32
    optimizer: str = "adamw"
    lr: float = 3e-3  # of the classifier, and of the whole network when it is not pretrained
    # Of a pretrained backbone; None: lr. On the demo's development set 1e-3 made 14 mistakes in 1000 attempts
    # with either seed, where 3e-4 made 19 and 22 and 2e-3 16, and had the lowest validation loss
    # (benchmarks/README.md, "Choosing the recipe on the development set").
    backbone_lr: float | None = 1e-3
    momentum: float = 0.9  # SGD only
    weight_decay: float = 0.01
    schedule: str = "cosine"  # decay the learning rate to zero over the run, per step; or constant
    warmup: float = 0.1  # share of the steps over which the learning rate rises linearly from zero
    label_smoothing: float = 0.1
    img_size: int = 224  # EfficientNet-Lite0's native size: 160 px gave 0.946 balanced accuracy where 224 gave 0.962 (benchmarks/README.md)
    augment: str = "light"  # on-the-fly augmentation of training images: none, light or strong
    balance: str = "loss"
    val_fraction: float = 0.15
    test_fraction: float = 0.15  # used only when there is no --test folder and no test/ split folder
    test: str | None = None
    test_every: int = 2
    save_every: int = 2
    positive: str | None = None
    weights: str | None = None
    threshold: float = 0.5
    # Fit a temperature on the validation split after training and store it in best.safetensors, so that
    # p(success) means what it says (the report's reliability diagram shows the effect).
    calibrate: bool = False
    seed: int = 0
    device: str = "auto"
    fast: bool = True  # channels-last memory and mixed precision where the hardware supports it (SpeedOptions)
    compile: bool = False  # torch.compile the training step's model (needs a C++ compiler on the CPU)
    # Processes that augment the next batches while the model trains; None: data.default_batch_workers (half
    # the cores). For EfficientNet-Lite0 at 224 px augmenting a batch costs a tenth of its step, so the step
    # is better off with every core: 1.34-1.44 s a batch of 32 on 2 threads, 2.47 s on 1 thread beside a worker.
    workers: int | None = 0
    out: str | None = None

    @classmethod
    def from_recipe(cls, data: str, recipe: str = "default", **options) -> "TrainConfig":
        """The recipe's settings, then the options given, which win."""
        if recipe not in RECIPES:
            raise GraspcheckError(f"unknown recipe {recipe!r}; choose one of: {', '.join(RECIPES)}")
        unknown = sorted(set(options) - {f.name for f in fields(cls)})
        if unknown:
            raise GraspcheckError(f"unknown training option(s): {', '.join(unknown)}")
        return cls(data=data, recipe=recipe, **{**RECIPES[recipe], **options})

    def validate(self) -> None:
        """Refuse impossible settings with one line each; a model without pretrained weights (seednet) trains
        from random initialisation, said in one line, as with Ultralytics' pretrained=True."""
        from .console import log
        from .models import model_entry

        if self.pretrained and model_entry(self.model).pretrained is None:
            if self.freeze_backbone:
                raise GraspcheckError(f"{self.model} has no pretrained weights to freeze; choose a pretrained model or drop --freeze-backbone")
            log(f"{self.model} has no pretrained weights; training it from random initialisation")
            self.pretrained = False
        if self.freeze_backbone and not self.pretrained:
            raise GraspcheckError("--freeze-backbone needs --pretrained: a random backbone would stay random")
        for option, value, choices in (("augment", self.augment, AUGMENT_CHOICES), ("balance", self.balance, BALANCE_MODES),
                                       ("optimizer", self.optimizer, OPTIMIZERS), ("schedule", self.schedule, SCHEDULES)):
            if value not in choices:
                raise GraspcheckError(f"--{option} must be one of {', '.join(choices)}, got {value!r}")
        for name in ("epochs", "batch_size", "test_every", "save_every"):
            if getattr(self, name) < 1:
                raise GraspcheckError(f"--{name.replace('_', '-')} must be at least 1")
        if self.img_size < MIN_IMG_SIZE:
            raise GraspcheckError(f"--img-size must be at least {MIN_IMG_SIZE} pixels (the models shrink their input up to 32 times), got {self.img_size}")
        if self.workers is not None and self.workers < 0:
            raise GraspcheckError("--workers must be 0 (prepare batches in the training process) or more")
        if not (0 <= self.val_fraction < 1 and 0 <= self.test_fraction < 1 and self.val_fraction + self.test_fraction < 1):
            raise GraspcheckError("--val-fraction and --test-fraction must be in [0, 1) and sum to less than 1")
        if not 0 < self.threshold < 1:
            raise GraspcheckError("--threshold must be between 0 and 1")
        if not 0 <= self.warmup < 1 or not 0 <= self.label_smoothing < 1:
            raise GraspcheckError("--warmup and --label-smoothing must be in [0, 1)")
        if self.lr <= 0 or (self.backbone_lr is not None and self.backbone_lr <= 0):
            raise GraspcheckError("--lr and --backbone-lr must be above 0")


# A recipe is a set of settings that differ from TrainConfig's defaults (the "default" recipe).
RECIPES: dict[str, dict] = {
    "default": {},
    # The previous default: MobileNetV3-small from random initialisation at 96 px; no download, no pretrained file.
    "scratch": dict(model="mobilenet_v3_small", pretrained=False, epochs=15, optimizer="sgd", lr=0.02, backbone_lr=None,
                    weight_decay=0.0, warmup=0.0, label_smoothing=0.0, img_size=96, augment="strong", workers=None),
    # The seed notebook: its Net at 224x224, SGD at a constant 0.001, 10 epochs, no augmentation.
    "seed": dict(model="seednet", pretrained=False, epochs=10, optimizer="sgd", lr=0.001, backbone_lr=None, weight_decay=0.0,
                 schedule="constant", warmup=0.0, label_smoothing=0.0, img_size=224, augment="none"),
}


def option_help(name: str, text: str) -> str:
    """CLI help for a training option: its text and its value in each recipe, from TrainConfig and RECIPES."""
    default = {f.name: f.default for f in fields(TrainConfig)}[name]
    values = [f"default: {default}"] + [f"{recipe}: {settings[name]}" for recipe, settings in RECIPES.items() if name in settings]
    return f"{text} ({'; '.join(values)})"
