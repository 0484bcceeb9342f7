import pytest
import torch

import graspcheck
from graspcheck.models import load_pretrained


def test_seednet_matches_the_seed_notebook_at_224():
    net = graspcheck.create_model("seednet")
    assert sum(p.numel() for p in net.parameters()) == 790_594
    assert net.lastcnn.kernel_size == (56, 56)
    names = [type(m).__name__ for m in net.block1]
    assert names == ["Conv2d", "BatchNorm2d", "ReLU", "Dropout2d"]
    assert net(torch.zeros(2, 3, 224, 224)).shape == (2, 2)


@pytest.mark.parametrize("size", [32, 96, 128])
def test_seednet_last_kernel_follows_the_input_size(size):
    net = graspcheck.create_model("seednet", input_size=(size, size))
    assert net.lastcnn.kernel_size == (size // 4, size // 4)
    assert net(torch.zeros(1, 3, size, size)).shape == (1, 2)


def test_seednet_rejects_sizes_it_cannot_reduce_to_one_pixel():
    with pytest.raises(graspcheck.GraspcheckError, match="divisible by 4"):
        graspcheck.create_model("seednet", input_size=(30, 30))


@pytest.mark.parametrize("name", ["mobilenet_v3_small", "resnet18"])
def test_torchvision_models_build_offline_with_two_outputs(name):
    net = graspcheck.create_model(name).eval()
    assert net(torch.zeros(1, 3, 64, 64)).shape == (1, 2)


def test_unknown_model_names_the_choices():
    with pytest.raises(graspcheck.GraspcheckError, match="seednet"):
        graspcheck.create_model("nope")


def test_pretrained_weights_load_except_a_mismatched_head(tmp_path):
    imagenet_like = graspcheck.create_model("resnet18", num_classes=1000)
    path = tmp_path / "resnet18.pth"
    torch.save(imagenet_like.state_dict(), path)
    net = graspcheck.create_model("resnet18")
    loaded, total = load_pretrained(net, path)
    assert loaded == total - 2  # everything but fc.weight and fc.bias
    assert torch.equal(net.conv1.weight, imagenet_like.conv1.weight)


def _imagenet_top5(photo: str) -> list[int]:
    """ImageNet classes of one of scikit-image's sample photos, through the registry's pretrained weights and
    normalisation and graspcheck's own preprocessing."""
    skimage = pytest.importorskip("skimage", reason="scikit-image (a test dependency) carries the sample photos")
    from pathlib import Path

    from graspcheck.models import pretrained_config
    from graspcheck.transforms import Preprocess

    config = pretrained_config("efficientnet_lite0")
    net = graspcheck.create_model("efficientnet_lite0", num_classes=1000).eval()
    net.load_state_dict(config.load())
    preprocess = Preprocess(size=(config.input_size,) * 2, mean=config.mean, std=config.std, interpolation=config.interpolation)
    pixels = torch.from_numpy(preprocess.load(Path(skimage.__file__).parent / "data" / photo))[None]
    with torch.no_grad():
        return net(preprocess.normalize(pixels)).topk(5).indices[0].tolist()


def test_pretrained_efficientnet_lite0_sees_a_cat_and_an_espresso():
    # A wrong key map or normalisation gives noise; these fail unless the ImageNet weights work as published.
    assert _imagenet_top5("chelsea.png")[0] in range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat
    assert _imagenet_top5("coffee.png")[0] in (967, 968, 504)  # espresso, cup, coffee mug


def test_a_pretrained_model_starts_with_imagenet_features_and_a_zero_head():
    from graspcheck.models import pretrained_config

    net = graspcheck.create_model("efficientnet_lite0", pretrained=True)
    assert torch.equal(net.conv_stem.weight, pretrained_config("efficientnet_lite0").load()["conv_stem.weight"])
    assert net.classifier.weight.shape == (2, 1280) and not net.classifier.weight.any()


def test_a_model_without_pretrained_weights_says_so():
    with pytest.raises(graspcheck.GraspcheckError, match="no pretrained weights"):
        graspcheck.create_model("seednet", pretrained=True)
