import pytest
import torch
from torch import nn

from atlib.models import build_model, num_parameters
from atlib.spec import family

PAPER_COUNTS = {"wrn-16-1": 175_066, "wrn-16-2": 691_674, "wrn-40-1": 563_930, "wrn-40-2": 2_243_546}


@pytest.mark.parametrize("name, count", PAPER_COUNTS.items())
def test_wrn_parameter_counts_equal_the_papers(name, count):
    assert num_parameters(build_model(name, 3, 10)) == count


def test_nin_sizes():
    assert 0.95e6 < num_parameters(build_model("nin-wide", 3, 10)) < 1.05e6
    assert 0.18e6 < num_parameters(build_model("nin-thin", 3, 10)) < 0.22e6
    # without batch norm the convs carry biases instead of BN's affine pair: fewer parameters
    assert num_parameters(build_model("nin-thin", 3, 10, batchnorm=False)) < num_parameters(
        build_model("nin-thin", 3, 10))


# The authors' NIN (wide-residual-networks, models/nin.lua) for 3 input channels and 10 classes:
# conv weights k*k*cin*cout of conv5x5, 1x1, 1x1 | conv5x5, 1x1, 1x1 | conv3x3, 1x1, 1x1;
# each conv output channel has a bias, or with batch norm BN's weight and bias instead;
# the classifier maps the last width to 10 classes, with a bias.
NIN_CONV_WEIGHTS = {
    "nin-wide": 5*5*3*192 + 192*160 + 160*96 + 5*5*96*192 + 192*192 + 192*192 + 3*3*192*192 + 192*192 + 192*192,
    "nin-thin": 5*5*3*86 + 86*72 + 72*43 + 5*5*43*86 + 86*86 + 86*86 + 3*3*86*86 + 86*86 + 86*86,  # x0.45
}
NIN_CONV_CHANNELS = {"nin-wide": 192 + 160 + 96 + 6 * 192, "nin-thin": 86 + 72 + 43 + 6 * 86}
NIN_CLASSIFIER = {"nin-wide": 192 * 10 + 10, "nin-thin": 86 * 10 + 10}


@pytest.mark.parametrize("batchnorm", [True, False])
@pytest.mark.parametrize("name", ["nin-wide", "nin-thin"])
def test_nin_parameter_counts_by_hand(name, batchnorm):
    per_channel = 2 if batchnorm else 1
    expected = NIN_CONV_WEIGHTS[name] + per_channel * NIN_CONV_CHANNELS[name] + NIN_CLASSIFIER[name]
    assert num_parameters(build_model(name, 3, 10, batchnorm=batchnorm)) == expected


@pytest.mark.parametrize("relu_before_pool", [True, False])
def test_nin_conv_group_outputs_keep_the_logits(relu_before_pool):
    torch.manual_seed(0)
    pool = build_model("nin-thin", 3, 10, relu_before_pool=relu_before_pool).eval()
    conv = build_model("nin-thin", 3, 10, relu_before_pool=relu_before_pool, group_outputs="conv").eval()
    conv.load_state_dict(pool.state_dict())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        (logits_pool, pooled), (logits_conv, convs) = pool(x), conv(x)
    assert torch.equal(logits_pool, logits_conv)
    # before pooling: block 1 keeps the input's 32x32 (padded convs), block 2 the 16x16 of pool 1
    assert [tuple(g.shape[1:]) for g in convs] == [(43, 32, 32), (86, 16, 16), (86, 8, 8)]
    assert [tuple(g.shape[1:]) for g in pooled] == [(43, 16, 16), (86, 8, 8), (86, 8, 8)]
    assert (convs[0] < 0).any() and (convs[1] < 0).any()  # before ReLU
    # the pooled groups are these conv outputs, ReLU'd and pooled (in the order relu_before_pool says)
    for conv_out, pooled_out, stage in zip(convs[:2], pooled[:2], (nn.MaxPool2d(3, 2, 1), nn.AvgPool2d(3, 2, 1)),
                                           strict=True):
        expected = stage(torch.relu(conv_out)) if relu_before_pool else stage(conv_out)
        assert torch.allclose(pooled_out, expected, atol=1e-6)
    assert torch.equal(convs[2], pooled[2])  # the last group is the last conv's output either way


def test_nin_group_outputs_rejects_unknown_value():
    with pytest.raises(ValueError, match=r"group_outputs.*pool, conv.*'relu'"):
        build_model("nin-thin", 3, 10, group_outputs="relu")


@pytest.mark.parametrize("name", ["wrn-16-1", "wrn-16-2", "wrn-40-1", "nin-wide", "nin-thin"])
@pytest.mark.parametrize("shape", [(3, 32, 32), (1, 28, 28)])
def test_group_shapes_small_inputs(name, shape):
    model = build_model(name, shape[0], 10).eval()
    logits, groups = model(torch.randn(2, *shape))
    assert logits.shape == (2, 10)
    assert len(groups) == 3
    h = shape[1]
    sizes = [g.shape[-1] for g in groups]
    if name.startswith("wrn"):
        k = int(name.split("-")[2])
        assert [g.shape[1] for g in groups] == [16 * k, 32 * k, 64 * k]
        assert sizes == [h, (h + 1) // 2, (h + 3) // 4]
    else:
        assert sizes == [(h + 1) // 2, (h + 3) // 4, (h + 3) // 4]


@pytest.mark.parametrize("name", ["resnet-18", "resnet-34"])
def test_resnet_stages_on_imagenet_and_small_inputs(name):
    model = build_model(name, 3, 1000).eval()
    with torch.no_grad():
        logits, groups = model(torch.randn(1, 3, 224, 224))
    assert logits.shape == (1, 1000)
    assert [tuple(g.shape[1:]) for g in groups] == [(64, 56, 56), (128, 28, 28), (256, 14, 14), (512, 7, 7)]
    small = build_model(name, 1, 10).eval()
    with torch.no_grad():
        logits, groups = small(torch.randn(2, 1, 28, 28))
    assert logits.shape == (2, 10) and len(groups) == 4


def test_nin_relu_switch_changes_group_output_not_shape():
    torch.manual_seed(0)
    a = build_model("nin-thin", 3, 10, batchnorm=False, relu_before_pool=True).eval()
    b = build_model("nin-thin", 3, 10, batchnorm=False, relu_before_pool=False).eval()
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 3, 32, 32)
    ga, gb = a(x)[1][0], b(x)[1][0]
    assert ga.shape == gb.shape
    assert (ga >= 0).all() and (gb < 0).any()
    # max-pooling commutes with ReLU, so ReLU after the pool gives the same first group
    assert torch.allclose(ga, torch.relu(gb))


def test_unknown_model_lists_known_names():
    with pytest.raises(ValueError, match="known models: .*wrn-16-1.*nin-wide.*resnet-18"):
        family("vgg-16")
    with pytest.raises(ValueError, match="6n\\+4"):
        build_model("wrn-17-1", 3, 10)
    with pytest.raises(ValueError, match="no option"):
        build_model("wrn-16-1", 3, 10, batchnorm=False)


def test_pretrained_weights_are_never_downloaded(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(FileNotFoundError, match="never downloads"):
        build_model("resnet-18", 3, 10, pretrained="imagenet")
    weights = tmp_path / "r18.pt"
    source = build_model("resnet-18", 3, 1000)
    torch.save(_torchvision_state(source), weights)
    loaded = build_model("resnet-18", 3, 1000, pretrained=str(weights))
    assert torch.equal(loaded.fc.weight, source.fc.weight)


def _torchvision_state(model):
    """The wrapped model's weights under torchvision's own key names."""
    import torchvision
    net = torchvision.models.resnet18(weights=None)
    net.conv1, net.bn1 = model.stem[0], model.stem[1]
    net.layer1, net.layer2, net.layer3, net.layer4 = model.groups
    net.fc = model.fc
    return net.state_dict()


def test_given_weights_must_match_the_sha256_prefix_in_their_torchvision_name(tmp_path):
    import hashlib

    state = _torchvision_state(build_model("resnet-18", 3, 1000))
    blob = tmp_path / "blob.pt"
    torch.save(state, blob)
    prefix = hashlib.sha256(blob.read_bytes()).hexdigest()[:8]
    good = tmp_path / f"resnet18-{prefix}.pth"
    blob.rename(good)
    build_model("resnet-18", 3, 1000, pretrained=str(good))  # its content matches its name
    wrong = "0" * 8 if prefix != "0" * 8 else "1" * 8
    bad = tmp_path / f"resnet18-{wrong}.pth"
    bad.write_bytes(good.read_bytes())
    with pytest.raises(ValueError, match=f"does not match the {wrong}"):
        build_model("resnet-18", 3, 1000, pretrained=str(bad))
