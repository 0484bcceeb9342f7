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
