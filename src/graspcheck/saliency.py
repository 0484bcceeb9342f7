"""Where a model looks: Grad-CAM maps for the report, which overlays them on every mistaken image and on a sample
of each class, so that a model that is right for the wrong reason (a cable, a shadow, the table edge) shows.

Grad-CAM (Selvaraju et al., 2017) weights each channel of the last spatial feature map by the mean gradient of
the class score over that map, sums the channels and keeps the positive part: the regions whose features raise
the score. The score explained is the log-odds of the target class (its logit minus the other one's), the
quantity that decides a two-class verdict: the map for a class is then the evidence for it *against* the other.

The computation is a few lines on PyTorch hooks, not a library. Captum's ``LayerGradCam`` does the same
arithmetic, but importing ``captum.attr`` imports matplotlib.pyplot and some 1,400 modules (measured with
captum 0.9), which graspcheck keeps out of its processes (see report.py), and it returns no forward output,
so explaining the predicted class would take a second pass; the ``grad-cam`` package pulls in OpenCV. Both
would hook the same layer the same way.

The layer is found by probing the network, so that every registry model works unchanged: the last nn.Conv2d
whose output is larger than 1x1, then the last module whose output has that same shape, i.e. the same feature
map after its normalisation, activation and residual sum (ResNet's ``layer4``, EfficientNet-Lite0's ``bn2``,
MobileNetV3's ``features``). SeedNet's last convolution covers its whole input and outputs 1x1, so its
``block3`` is taken.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .console import GraspcheckError
from .predict import GraspModel, TorchNetwork
from .transforms import Preprocess

PREDICTED = "predicted"


def saliency_maps(model: GraspModel, pixels: np.ndarray, target: str = PREDICTED, batch_size: int = 32) -> np.ndarray:
    """Grad-CAM maps, float32 (N, H, W) in [0, 1], for uint8 RGB images (N, H, W, 3) at the model's input size
    (model.info.preprocess.size).

    target "predicted" explains each image's verdict (GraspModel.verdicts: at the model's threshold, after its
    calibration temperature), so a mistaken image shows what misled the model; a class name explains that class for every image. Each map is scaled so that its
    maximum is 1; a map with no evidence for the target anywhere is all zeros. The maps are computed in
    batches of batch_size with the network in eval mode, and the model is left as it was: its weights,
    buffers, gradients, requires_grad flags and training flags are restored and no hook remains.
    """
    backend = model.backend
    if not isinstance(backend, TorchNetwork):
        raise GraspcheckError("saliency needs the PyTorch weights, which an exported .onnx model does not have; "
                              "load the .safetensors checkpoint or the run folder instead")
    if batch_size < 1:
        raise GraspcheckError(f"batch size must be at least 1, got {batch_size}")
    if target != PREDICTED and target not in model.class_names:
        raise GraspcheckError(f"saliency target must be {PREDICTED!r} or a class name ({', '.join(model.class_names)}), got {target!r}")
    preprocess = backend.pipeline.preprocess
    pixels = _checked_pixels(pixels, preprocess.size)
    height, width = preprocess.size
    if len(pixels) == 0:
        return np.zeros((0, height, width), dtype=np.float32)
    network = backend.pipeline.network
    fixed_class = None if target == PREDICTED else model.class_names.index(target)
    # The verdict divides the logits by the checkpoint's calibration temperature; the map does not depend on it
    # (it scales every log-odds gradient alike), but which class is predicted at a threshold other than 0.5 does.
    temperature = backend.pipeline.temperature  # what the verdicts run with
    maps = []
    # inference_mode(False): a caller inside torch.inference_mode() still gets gradients.
    with _left_as_it_was(network), torch.inference_mode(False), torch.enable_grad():
        _, layer = feature_layer(network, preprocess, backend.device)
        for start in range(0, len(pixels), batch_size):
            batch = torch.from_numpy(pixels[start : start + batch_size]).to(backend.device)
            maps.append(_grad_cam(network, layer, preprocess, batch, fixed_class, model.info.threshold, temperature))
    return np.concatenate(maps)


def feature_layer(network: nn.Module, preprocess: Preprocess, device: torch.device | str = "cpu") -> tuple[str, nn.Module]:
    """(name, module) of the feature map Grad-CAM reads: the last module whose output has the shape of the last
    nn.Conv2d output larger than 1x1, found by one forward pass of a blank image at the model's input size.

    Matching the shape of a convolution's output rules out maps in other layouts (a transformer's (N, H, W, C)
    tokens); taking the last module of that shape reads the map after normalisation, activation and any
    residual sum, which is what the classifier sees.
    """
    names = {module: name for name, module in network.named_modules() if module is not network}
    last_output: dict[nn.Module, tuple[int, torch.Size | None]] = {}  # module -> (finish order, shape of its last output)
    order = iter(range(1 << 62))

    def record(module: nn.Module, inputs, output) -> None:
        last_output[module] = (next(order), output.shape if isinstance(output, torch.Tensor) else None)

    height, width = preprocess.size
    blank = torch.zeros(1, height, width, 3, dtype=torch.uint8, device=device)
    handles = [module.register_forward_hook(record) for module in names]
    try:
        with _left_as_it_was(network), torch.no_grad():
            network(preprocess.normalize(blank))
    finally:
        for handle in handles:
            handle.remove()
    finished = sorted(last_output.items(), key=lambda item: item[1][0])
    convolutions = [shape for module, (_, shape) in finished
                    if isinstance(module, nn.Conv2d) and shape is not None and len(shape) == 4 and shape[2] > 1 and shape[3] > 1]
    if not convolutions:
        raise GraspcheckError(f"this network has no convolutional feature map larger than 1x1 at {height}x{width}, "
                              "which Grad-CAM needs; saliency works with convolutional models")
    module = [module for module, (_, shape) in finished if shape == convolutions[-1]][-1]
    return names[module], module


def overlay(pixels: np.ndarray, heat: np.ndarray, alpha: float = 0.45, colormap: str = "jet") -> np.ndarray:
    """uint8 RGB image(s) (..., H, W, 3) with heat (..., H, W), in [0, 1], blended in through a matplotlib
    colormap ("jet", "inferno", ...).

    Each pixel takes alpha * heat of the colour: where the model does not look the photo stays as the camera
    saw it, and the colour grows to alpha where it looks most. The colormap comes from matplotlib's registry;
    pyplot, with its global state and backend, is never imported.
    """
    import matplotlib  # the colormap registry only

    pixels = np.asarray(pixels)
    heat = np.asarray(heat, dtype=np.float32)
    if pixels.dtype != np.uint8 or pixels.ndim < 3 or pixels.shape[-1] != 3:
        raise ValueError(f"overlay takes uint8 RGB pixels (..., H, W, 3), got {pixels.dtype} {pixels.shape}")
    if heat.shape != pixels.shape[:-1]:
        raise ValueError(f"heat has shape {heat.shape}; it must be {pixels.shape[:-1]}, one value per pixel")
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be between 0 and 1, got {alpha}")
    heat = np.clip(np.nan_to_num(heat), 0, 1)
    colors = matplotlib.colormaps[colormap](heat, bytes=True)[..., :3].astype(np.float32)
    weight = alpha * heat[..., None]
    blended = pixels.astype(np.float32) * (1 - weight) + colors * weight
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


def _checked_pixels(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    array = np.asarray(pixels)
    height, width = size
    if array.dtype != np.uint8 or array.ndim != 4 or array.shape[1:] != (height, width, 3):
        raise GraspcheckError(f"saliency takes uint8 RGB images (N, {height}, {width}, 3) at the model's input size, got "
                              f"{array.dtype} {array.shape}; resize them with model.info.preprocess.resize")
    return np.ascontiguousarray(array)


@contextmanager
def _left_as_it_was(network: nn.Module) -> Iterator[None]:
    """Eval mode (BatchNorm's running statistics, no dropout) and no parameter gradients while inside; every
    module's training flag and every parameter's requires_grad restored after, whatever happens."""
    parameters = list(network.parameters())
    requires_grad = [parameter.requires_grad for parameter in parameters]
    training = [(module, module.training) for module in network.modules()]
    try:
        network.eval()
        for parameter in parameters:
            # Gradients flow to the feature map only: nothing accumulates in .grad, and no graph is built
            # through the layers before the map.
            parameter.requires_grad_(False)
        yield
    finally:
        for parameter, flag in zip(parameters, requires_grad):
            parameter.requires_grad_(flag)
        for module, flag in training:
            module.training = flag


def _grad_cam(network: nn.Module, layer: nn.Module, preprocess: Preprocess, pixels: torch.Tensor,
              fixed_class: int | None, threshold: float, temperature: float) -> np.ndarray:
    """Maps (N, H, W) for one batch; fixed_class None explains each image's predicted class."""
    captured: list[torch.Tensor] = []

    def capture(module: nn.Module, inputs, output: torch.Tensor) -> torch.Tensor:
        # The map as a leaf that requires grad; the layers after it get a copy, which in-place activations may change.
        features = output.detach().requires_grad_(True)
        captured.append(features)
        return features.clone()

    handle = layer.register_forward_hook(capture)
    try:
        logits = network(preprocess.normalize(pixels)).float()
    finally:
        handle.remove()
    features = captured[-1]  # a module called more than once: its last call feeds the classifier
    if fixed_class is None:
        classes = (torch.softmax(logits.detach() / temperature, dim=1)[:, 1] >= threshold).long()  # GraspModel.verdicts
    else:
        classes = torch.full((len(logits),), fixed_class, dtype=torch.long, device=logits.device)
    log_odds = logits - logits.flip(1)  # two classes: each logit minus the other
    # Images do not interact in eval mode, so the gradient of the sum is each image's own.
    score = log_odds.gather(1, classes[:, None]).sum()
    (gradients,) = torch.autograd.grad(score, features)
    weights = gradients.float().mean(dim=(2, 3), keepdim=True)
    cam = torch.relu((weights * features.detach().float()).sum(dim=1, keepdim=True))
    cam = F.interpolate(cam, size=tuple(preprocess.size), mode="bilinear", align_corners=False)[:, 0]
    peak = cam.flatten(1).amax(dim=1).clamp_min(torch.finfo(cam.dtype).tiny)[:, None, None]
    return (cam / peak).clamp_(0, 1).cpu().numpy().astype(np.float32)
