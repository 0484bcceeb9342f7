"""Grad-CAM saliency: the map points at what decides the class, the model is left as it was, every registry
architecture works, an exported model is refused in one line, and the overlay colours where the heat is."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from graspcheck.checkpoint import CheckpointInfo, save_checkpoint
from graspcheck.console import GraspcheckError
from graspcheck.models import create_model
from graspcheck.predict import GraspModel
from graspcheck.saliency import feature_layer, overlay, saliency_maps
from graspcheck.transforms import Preprocess

SIZE = 64
SQUARE = 12
CLASSES = ("not_success", "success")


class BrightSquareNet(nn.Module):
    """Hand-set weights: success if and only if the image holds a bright patch.

    conv1 finds bright pixels (channel 0) and dark ones (channel 1); after a 4x4 max-pool, conv2 passes both on,
    the dark channel three times as strong, to a 16x16 feature map; the head adds up the bright channel and
    slightly subtracts the dark one. Grad-CAM must therefore weight channels by their gradients: summed
    unweighted, the dark background would outshine the square."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 2, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.pool = nn.MaxPool2d(4)
        self.conv2 = nn.Conv2d(2, 2, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.head = nn.Linear(2, 2)
        with torch.no_grad():
            # Input standardised to [-1, 1] (mean 0.5, std 0.5).
            self.conv1.weight.zero_()
            self.conv1.weight[0] = 1 / 27  # local mean brightness, positive above ~0.75 (uint8 ~191)
            self.conv1.weight[1] = -1 / 27  # local darkness, positive below uint8 128
            self.conv1.bias.copy_(torch.tensor([-0.5, 0.0]))
            self.conv2.weight.zero_()
            self.conv2.weight[0, 0, 1, 1] = 1.0
            self.conv2.weight[1, 1, 1, 1] = 3.0
            self.conv2.bias.zero_()
            self.head.weight.copy_(torch.tensor([[0.0, 0.0], [100.0, -0.1]]))
            self.head.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.relu1(self.conv1(x)))
        x = self.relu2(self.conv2(x))
        return self.head(x.mean(dim=(2, 3)))


def square_model() -> GraspModel:
    preprocess = Preprocess(size=(SIZE, SIZE), mean=(0.5,) * 3, std=(0.5,) * 3)
    return GraspModel(BrightSquareNet(), CheckpointInfo("seednet", preprocess, CLASSES))


def scene(rng: np.random.Generator, square: tuple[int, int] | None, decoy: tuple[int, int]) -> np.ndarray:
    """A dark noisy frame with a mid-grey decoy patch and, for success, a bright square at square (top, left)."""
    image = rng.integers(0, 70, (SIZE, SIZE, 3), dtype=np.uint8)
    image[decoy[0] : decoy[0] + SQUARE, decoy[1] : decoy[1] + SQUARE] = 150
    if square is not None:
        top, left = square
        image[top : top + SQUARE, left : left + SQUARE] = rng.integers(225, 256, (SQUARE, SQUARE, 3), dtype=np.uint8)
    return image


def inside(point: tuple[int, int], square: tuple[int, int]) -> bool:
    return square[0] <= point[0] < square[0] + SQUARE and square[1] <= point[1] < square[1] + SQUARE


def overlaps(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return abs(a[0] - b[0]) < SQUARE and abs(a[1] - b[1]) < SQUARE


# (square, decoy) pairs, placed so that neither the decoy nor the square's transpose or mirror images meet the
# square: a map that is transposed, flipped or drawn to the decoy puts its maximum outside.
SCENES = [((4, 44), (40, 20)), ((40, 6), (8, 20)), ((50, 36), (20, 46)), ((20, 2), (44, 48))]


def test_scene_layout_tells_a_transposed_or_mirrored_map_apart():
    far = SIZE - SQUARE
    for square, decoy in SCENES:
        top, left = square
        for image_of_square in ((left, top), (far - top, left), (top, far - left), decoy):
            assert not overlaps(square, image_of_square)


def test_saliency_on_an_image_whose_class_is_decided_by_one_bright_square_puts_its_maximum_inside_that_square():
    model = square_model()
    rng = np.random.default_rng(0)
    images = [scene(rng, square, decoy) for square, decoy in SCENES]
    negatives = [scene(rng, None, decoy) for _, decoy in SCENES[:2]]
    pixels = np.stack(images[:2] + negatives[:1] + images[2:] + negatives[1:])
    assert model.verdicts(model.success_probabilities(pixels)) == ["success"] * 2 + ["not_success"] + ["success"] * 2 + ["not_success"]

    maps = saliency_maps(model, pixels, batch_size=4)  # batches of 4 and 2: the targets follow each image across batches

    assert maps.shape == (len(pixels), SIZE, SIZE) and maps.dtype == np.float32
    assert maps.min() >= 0 and maps.max() <= 1
    positives = np.concatenate([maps[:2], maps[3:5]])
    for heat, (square, _) in zip(positives, SCENES):
        peak = np.unravel_index(np.argmax(heat), heat.shape)
        assert inside(peak, square), f"the map peaks at {peak}, outside the square at {square}"
        assert heat.max() == pytest.approx(1.0)
    # One image at a time gives the same maps: images in a batch do not mix.
    alone = np.concatenate([saliency_maps(model, pixels[i : i + 1]) for i in range(len(pixels))])
    np.testing.assert_allclose(alone, maps, atol=1e-5)
    # Explaining the class "success" for every image gives the same maps for the images predicted success.
    np.testing.assert_allclose(saliency_maps(model, pixels, target="success")[[0, 1, 3, 4]], positives, atol=1e-5)


def test_explaining_the_other_class_points_away_from_the_evidence_against_it():
    model = square_model()
    rng = np.random.default_rng(1)
    pixels = np.stack([scene(rng, square, decoy) for square, decoy in SCENES])
    for heat, (square, _) in zip(saliency_maps(model, pixels, target="not_success"), SCENES):
        top, left = square
        # The square is evidence for success: the map for not_success keeps out of it.
        assert heat[top + 3 : top + SQUARE - 3, left + 3 : left + SQUARE - 3].max() < 0.05
        assert not inside(np.unravel_index(np.argmax(heat), heat.shape), square)


def test_predicted_means_the_verdict_at_the_models_threshold_and_calibration_temperature():
    model = square_model()
    model.info.threshold = 0.75
    model.backend.pipeline.temperature = 2.0  # calibrated: one bright square is no longer enough
    rng = np.random.default_rng(6)
    two_squares = scene(rng, SCENES[0][0], SCENES[0][1])
    two_squares[SCENES[1][0][0] : SCENES[1][0][0] + SQUARE, SCENES[1][0][1] : SCENES[1][0][1] + SQUARE] = 255
    pixels = np.stack([scene(rng, SCENES[2][0], SCENES[2][1]), two_squares, scene(rng, None, SCENES[3][1])])
    verdicts = model.verdicts(model.success_probabilities(pixels))
    assert verdicts == ["not_success", "success", "not_success"]  # at temperature 1 the first would be success

    maps = saliency_maps(model, pixels)

    for heat, verdict, image in zip(maps, verdicts, pixels):
        np.testing.assert_allclose(heat, saliency_maps(model, image[None], target=verdict)[0], atol=1e-5)


def test_an_unknown_target_or_images_at_another_size_are_refused_in_one_line():
    model = square_model()
    pixels = np.zeros((1, SIZE, SIZE, 3), dtype=np.uint8)
    with pytest.raises(GraspcheckError, match="predicted.*not_success, success.*'lifted'"):
        saliency_maps(model, pixels, target="lifted")
    with pytest.raises(GraspcheckError, match=r"\(N, 64, 64, 3\).*resize"):
        saliency_maps(model, np.zeros((1, 32, 32, 3), dtype=np.uint8))
    with pytest.raises(GraspcheckError, match="uint8"):
        saliency_maps(model, pixels.astype(np.float32))
    assert saliency_maps(model, pixels[:0]).shape == (0, SIZE, SIZE)


def _state(network: nn.Module) -> dict:
    return {
        "tensors": {k: v.clone() for k, v in network.state_dict().items()},
        "requires_grad": [p.requires_grad for p in network.parameters()],
        "grad": [None if p.grad is None else p.grad.clone() for p in network.parameters()],
        "training": [m.training for m in network.modules()],
        "hooks": sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in network.modules()),
    }


def test_saliency_leaves_the_model_as_it_was():
    torch.manual_seed(0)
    network = create_model("seednet", 2, (32, 32))  # BatchNorm and Dropout2d: train mode would change both
    model = GraspModel(network, CheckpointInfo("seednet", Preprocess(size=(32, 32)), CLASSES))
    pixels = np.random.default_rng(2).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    before_probabilities = model.success_probabilities(pixels)
    # A model mid-training: train mode except one block, one frozen weight, a gradient left from a step.
    network.train()
    network.block2.eval()
    network.block1[0].weight.requires_grad_(False)
    network.block3[0].weight.grad = torch.ones_like(network.block3[0].weight)
    before = _state(network)

    first = saliency_maps(model, pixels, batch_size=2)
    second = saliency_maps(model, pixels, target="success")

    after = _state(network)
    assert after["tensors"].keys() == before["tensors"].keys()
    for key, tensor in before["tensors"].items():
        assert torch.equal(after["tensors"][key], tensor), key  # weights and BatchNorm statistics
    assert after["requires_grad"] == before["requires_grad"]
    assert [g is None for g in after["grad"]] == [g is None for g in before["grad"]]
    assert all(a is None or torch.equal(a, b) for a, b in zip(after["grad"], before["grad"]))
    assert after["training"] == before["training"]
    assert after["hooks"] == before["hooks"] == 0
    # Computed in eval mode although the model was in train mode: no dropout, the same maps each time.
    np.testing.assert_allclose(first, saliency_maps(model, pixels, batch_size=5), atol=1e-5)
    np.testing.assert_allclose(second, saliency_maps(model, pixels, target="success", batch_size=1), atol=1e-5)
    network.eval()
    torch.testing.assert_close(model.success_probabilities(pixels), before_probabilities, rtol=0, atol=0)


def test_saliency_works_inside_inference_mode():
    model = square_model()
    pixels = np.stack([scene(np.random.default_rng(3), SCENES[0][0], SCENES[0][1])])
    with torch.inference_mode():
        heat = saliency_maps(model, pixels)
    assert inside(np.unravel_index(np.argmax(heat[0]), heat[0].shape), SCENES[0][0])


@pytest.mark.parametrize("name, size, layer", [
    ("efficientnet_lite0", 64, "bn2"),  # conv_head, after its BatchNorm and ReLU6: 2x2 at 64 px
    ("mobilenet_v3_small", 64, "features"),
    ("resnet18", 64, "layer4"),  # after the last residual sum
    ("seednet", 32, "block3"),  # its last convolution covers the whole map (1x1 output): the block before it
])
def test_saliency_on_registry_models(name, size, layer):
    torch.manual_seed(0)
    network = create_model(name, 2, (size, size))
    model = GraspModel(network, CheckpointInfo(name, Preprocess(size=(size, size)), CLASSES))
    assert feature_layer(network, model.info.preprocess)[0] == layer
    pixels = np.random.default_rng(4).integers(0, 256, (3, size, size, 3), dtype=np.uint8)
    maps = saliency_maps(model, pixels)
    assert maps.shape == (3, size, size) and maps.dtype == np.float32
    assert np.isfinite(maps).all() and maps.min() >= 0 and maps.max() <= 1
    assert maps.max() == pytest.approx(1.0)  # random weights still have evidence for something somewhere


def test_a_network_without_a_spatial_feature_map_is_refused():
    network = nn.Sequential(nn.Flatten(), nn.Linear(8 * 8 * 3, 2))
    model = GraspModel(network, CheckpointInfo("seednet", Preprocess(size=(8, 8)), CLASSES))
    with pytest.raises(GraspcheckError, match="no convolutional feature map larger than 1x1 at 8x8"):
        saliency_maps(model, np.zeros((1, 8, 8, 3), dtype=np.uint8))


def test_an_exported_onnx_model_is_refused_in_one_line(tmp_path):
    import graspcheck
    from graspcheck.export import export

    checkpoint = tmp_path / "tiny.safetensors"
    save_checkpoint(checkpoint, create_model("seednet", 2, (8, 8)), CheckpointInfo("seednet", Preprocess(size=(8, 8)), CLASSES))
    model = graspcheck.load(export(checkpoint))
    with pytest.raises(GraspcheckError) as error:
        saliency_maps(model, np.zeros((1, 8, 8, 3), dtype=np.uint8))
    message = str(error.value)
    assert "\n" not in message and ".safetensors checkpoint or the run folder" in message


def test_overlay_colours_where_the_heat_is_and_keeps_the_photo_elsewhere():
    rng = np.random.default_rng(5)
    pixels = rng.integers(0, 256, (2, 16, 20, 3), dtype=np.uint8)
    heat = np.zeros((2, 16, 20), dtype=np.float32)
    heat[:, 4:8, 10:15] = 1.0
    out = overlay(pixels, heat)
    assert out.dtype == np.uint8 and out.shape == pixels.shape
    hot = heat > 0
    # Jet's top is dark red (128, 0, 0): at alpha 0.45 every hot pixel moves far from random photo colours.
    assert np.abs(out[hot].astype(int) - pixels[hot]).sum(axis=-1).min() > 20
    np.testing.assert_array_equal(out[~hot], pixels[~hot])
    single = overlay(pixels[0], heat[0], alpha=1.0, colormap="inferno")
    assert single.shape == pixels[0].shape
    assert (single[hot[0]] == np.array([252, 254, 164])).all()  # inferno's top, unblended at alpha 1
    with pytest.raises(ValueError, match="heat has shape"):
        overlay(pixels, heat[0])


def test_importing_and_overlaying_change_nothing_global():
    code = ("import sys, logging, matplotlib; matplotlib.use('svg'); level = logging.getLogger().level; "
            "import numpy as np, graspcheck.saliency as s; "
            "imported = 'matplotlib.pyplot' in sys.modules; "
            "s.overlay(np.zeros((4, 4, 3), np.uint8), np.ones((4, 4))); "
            "print(imported, 'matplotlib.pyplot' in sys.modules, matplotlib.get_backend(), logging.getLogger().level == level)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "False", "svg", "True"]
