"""The model registry: a name maps to a constructor, as in timm. A new model is one decorated function."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
from torch import nn

from .console import GraspcheckError

ModelFactory = Callable[[int, tuple[int, int]], nn.Module]
_REGISTRY: dict[str, ModelFactory] = {}


def register_model(fn: ModelFactory) -> ModelFactory:
    _REGISTRY[fn.__name__] = fn
    return fn


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def create_model(name: str, num_classes: int = 2, input_size: tuple[int, int] = (224, 224)) -> nn.Module:
    if name not in _REGISTRY:
        raise GraspcheckError(f"unknown model {name!r}; choose one of: {', '.join(list_models())}")
    return _REGISTRY[name](num_classes, tuple(input_size))


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


@register_model
def seednet(num_classes: int, input_size: tuple[int, int]) -> nn.Module:
    return SeedNet(num_classes, input_size)


def _torchvision(builder_name: str) -> ModelFactory:
    def factory(num_classes: int, input_size: tuple[int, int]) -> nn.Module:
        import torchvision.models

        # weights=None: graspcheck never downloads; pretrained weights come from --weights PATH.
        model = getattr(torchvision.models, builder_name)(weights=None, num_classes=num_classes)
        # torchvision's MobileNetV3 and EfficientNet use BatchNorm momentum 0.01, tuned for long ImageNet
        # runs; in a run of a few hundred steps their running statistics stay stale and evaluation-mode
        # predictions collapse to one class. PyTorch's default, 0.1, tracks them in time.
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.momentum = 0.1
        return model

    factory.__name__ = builder_name
    factory.__doc__ = f"torchvision's {builder_name}, randomly initialised"
    return factory


for _name in ("mobilenet_v3_small", "mobilenet_v3_large", "resnet18", "resnet50", "efficientnet_b0"):
    register_model(_torchvision(_name))


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
