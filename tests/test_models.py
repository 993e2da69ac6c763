import math

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


# nin.lua: SpatialMaxPooling(3,3,2,2):ceil() and SpatialAveragePooling(3,3,2,2):ceil(), no padding
NIN_POOLS = (nn.MaxPool2d(3, 2, ceil_mode=True), nn.AvgPool2d(3, 2, ceil_mode=True))


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
    for conv_out, pooled_out, stage in zip(convs[:2], pooled[:2], NIN_POOLS, strict=True):
        expected = stage(torch.relu(conv_out)) if relu_before_pool else stage(conv_out)
        assert torch.allclose(pooled_out, expected, atol=1e-6)
    assert torch.equal(convs[2], pooled[2])  # the last group is the last conv's output either way


def test_nin_group_outputs_rejects_unknown_value():
    with pytest.raises(ValueError, match=r"group_outputs.*pool, conv.*'relu'"):
        build_model("nin-thin", 3, 10, group_outputs="relu")


@pytest.mark.parametrize("name", ["wrn-16-1", "wrn-16-2", "wrn-40-1", "nin-wide", "nin-thin"])
@pytest.mark.parametrize("shape", [(3, 32, 32), (1, 28, 28), (3, 31, 31)])
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
    else:  # Torch's ceil-mode pool without padding: ceil((n - 3) / 2) + 1
        first = math.ceil((h - 3) / 2) + 1
        second = math.ceil((first - 3) / 2) + 1
        assert sizes == [first, second, second]


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


# Feature-map sides by hand from nin.lua's pools (3x3, stride 2, ceil, no padding: ceil((n - 3) / 2) + 1):
# 32 -> ceil(29/2)+1 = 16 -> ceil(13/2)+1 = 8 (nin.lua's final 8x8 average); 28 -> 14 -> 7; 31 -> 15 -> 7;
# 33 -> 16 -> 8. Padding by 1 (floor((n - 1) / 2) + 1) would give 31 -> 16 -> 8 and 33 -> 17 -> 9.
@pytest.mark.parametrize("side, pooled", [(32, (16, 8)), (28, (14, 7)), (31, (15, 7)), (33, (16, 8))])
def test_nin_feature_map_sides_are_nin_luas(side, pooled):
    model = build_model("nin-thin", 3, 10, group_outputs="conv").eval()
    with torch.no_grad():
        _, convs = model(torch.randn(1, 3, side, side))
    # the blocks' convolutions keep their input's side (5x5 pad 2, 3x3 pad 1, 1x1): each pool alone shrinks it
    assert [g.shape[-1] for g in convs] == [side, pooled[0], pooled[1]]


def test_nin_pools_see_only_the_image():
    """A ceil-mode window that runs past the border covers only pixels inside: the average of ones is one
    everywhere (a zero-padded window at the corner would average 4 ones and 5 zeros), and a maximum in the
    last row and column reaches the last output."""
    model = build_model("nin-thin", 3, 10)
    ones = torch.ones(1, 1, 16, 16)
    assert torch.equal(model.pool2(ones), torch.ones(1, 1, 8, 8))
    x = torch.zeros(1, 1, 32, 32)
    x[0, 0, 31, 31] = 5.0
    out = model.pool1(x)
    assert out.shape[-1] == 16 and out[0, 0, 15, 15] == 5.0 and out.sum() == 5.0  # window 15 covers 30 and 31


# --- initialisation ---------------------------------------------------------------------------------
# The sample std of N independent normal draws has a relative standard error of 1/sqrt(2(N - 1)), and the
# sample mean of N draws from U(0, 1) a standard error of sqrt(1/12)/sqrt(N): each check allows 5 of them.

def assert_normal(w: torch.Tensor, std: float) -> None:
    n = w.numel()
    assert abs(w.std().item() / std - 1) < 5 / math.sqrt(2 * (n - 1)), (tuple(w.shape), w.std().item(), std)
    assert abs(w.mean().item()) < 5 * std / math.sqrt(n)


def assert_uniform_bn(model: nn.Module) -> None:
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    weights = torch.cat([m.weight.detach() for m in bns])
    assert bns and (weights >= 0).all() and (weights < 1).all()
    assert abs(weights.mean().item() - 0.5) < 5 * math.sqrt(1 / 12) / math.sqrt(len(weights))
    assert all(torch.equal(m.bias, torch.zeros_like(m.bias)) for m in bns)


def test_nin_authors_init_is_nin_luas_msr_and_torchs_batch_norm():
    torch.manual_seed(0)
    model = build_model("nin-wide", 3, 10, init="authors")
    convs = [m for b in (model.block1, model.block2, model.block3) for m in b if isinstance(m, nn.Conv2d)]
    # MSRinit: N(0, sqrt(2/n)), n = kW*kH*nInputPlane, by hand for each of the nine convolutions
    fan_in = [5 * 5 * 3, 192, 160, 5 * 5 * 96, 192, 192, 3 * 3 * 192, 192, 192]
    assert [c.weight[0].numel() for c in convs] == fan_in
    for conv, n in zip(convs, fan_in, strict=True):
        assert_normal(conv.weight.detach(), math.sqrt(2 / n))
    assert_uniform_bn(model)
    # the classifier is nin.lua's nn.Linear after Torch's reset: weight and bias U(-1/sqrt(192), 1/sqrt(192))
    bound = 1 / math.sqrt(192)
    for p in (model.classifier.weight, model.classifier.bias):
        assert 0 < p.abs().max().item() <= bound


def test_nin_without_batch_norm_gets_zero_conv_biases():
    torch.manual_seed(0)
    model = build_model("nin-thin", 3, 10, batchnorm=False, init="authors")
    convs = [m for b in (model.block1, model.block2, model.block3) for m in b if isinstance(m, nn.Conv2d)]
    assert len(convs) == 9 and all(torch.equal(c.bias, torch.zeros_like(c.bias)) for c in convs)
    assert_normal(convs[3].weight.detach(), math.sqrt(2 / (5 * 5 * 43)))  # thin widths: 43 into block 2


def test_wrn_authors_init_is_utils_py():
    """utils.py: conv_params kaiming_normal_ (std sqrt(2/(k*k*in))), linear_params kaiming_normal_ and zero bias,
    bnparams weight torch.rand (U(0, 1)) and zero bias."""
    torch.manual_seed(0)
    model = build_model("wrn-16-2", 3, 10, init="authors")
    assert_normal(model.conv0.weight.detach(), math.sqrt(2 / (3 * 3 * 3)))
    assert_normal(model.groups[2][0].conv0.weight.detach(), math.sqrt(2 / (3 * 3 * 64)))  # 64 -> 128 channels
    assert_normal(model.groups[1][0].shortcut.weight.detach(), math.sqrt(2 / 32))  # the 1x1 shortcut
    assert_normal(model.fc.weight.detach(), math.sqrt(2 / 128))
    assert torch.equal(model.fc.bias, torch.zeros(10))
    assert_uniform_bn(model)


@pytest.mark.parametrize("name", ["wrn-16-1", "nin-thin", "resnet-18"])
def test_default_init_keeps_pytorchs_batch_norm_weights_of_one(name):
    model = build_model(name, 3, 10)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(torch.equal(m.weight, torch.ones_like(m.weight)) for m in bns)
    torch.manual_seed(0)
    a = build_model(name, 3, 10)
    torch.manual_seed(0)
    b = build_model(name, 3, 10, init="torch")
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


def test_resnet_authors_init_draws_what_no_weight_file_sets(tmp_path):
    torch.manual_seed(0)
    fresh = build_model("resnet-18", 3, 10, init="authors")  # imagenet.py's student, from scratch
    assert_normal(fresh.stem[0].weight.detach(), math.sqrt(2 / (7 * 7 * 3)))
    assert_normal(fresh.groups[3][0].conv2.weight.detach(), math.sqrt(2 / (3 * 3 * 512)))
    assert_normal(fresh.fc.weight.detach(), math.sqrt(2 / 512))
    assert torch.equal(fresh.fc.bias, torch.zeros(10))
    assert_uniform_bn(fresh)
    # pretrained: its weights stay, and only the new 10-class classifier is drawn
    weights = tmp_path / "r18.pt"
    source = build_model("resnet-18", 3, 1000)
    torch.save(_torchvision_state(source), weights)
    tuned = build_model("resnet-18", 3, 10, init="authors", pretrained=str(weights))
    kept = {k: v for k, v in tuned.state_dict().items() if not k.startswith("fc.")}
    assert all(torch.equal(v, source.state_dict()[k]) for k, v in kept.items())
    assert_normal(tuned.fc.weight.detach(), math.sqrt(2 / 512))
    assert torch.equal(tuned.fc.bias, torch.zeros(10))


def test_unknown_init_is_refused():
    with pytest.raises(ValueError, match="init: expected one of torch, authors"):
        build_model("wrn-10-1", 3, 10, init="xavier")


# --- fb.resnet.torch's pre-activation ResNet (models/preresnet.lua) -------------------------------------------
# By hand from preresnet.lua for ImageNet (3 channels, 1000 classes): convolutions k*k*cin*cout with no bias
# (dropped under cuDNN >= 4), a BN's weight and bias per channel, the 1x1 shortcut without BN.
#   stem: 7*7*3*64 + BN 64*2                                             =      9,536
#   group 1 (64): block 1 no_preact 9*64*64 + BN 128 + 9*64*64 = 73,856; block 2 adds BN 128: 73,984
#   group 2 (128): block 1 BN 128 + 9*64*128 + BN 256 + 9*128*128 + 64*128 = 229,760; block 2 BN 256 +
#                  9*128*128 + BN 256 + 9*128*128 = 295,424
#   group 3 (256): 256 + 294,912 + 512 + 589,824 + 32,768 = 918,272; 512 + 589,824 + 512 + 589,824 = 1,180,672
#   group 4 (512): 512 + 1,179,648 + 1,024 + 2,359,296 + 131,072 = 3,671,552; 1,024 + 2 * 2,359,296 + 1,024
#                  = 4,720,640
#   final BN 512*2 = 1,024; classifier 512*1000 + 1000 = 513,000
# ResNet-18: 9,536 + 147,840 + 525,184 + 2,098,944 + 8,392,192 + 1,024 + 513,000 = 11,687,720. ResNet-34 repeats
# the second kind of block (3, 4, 6, 3 blocks): 9,536 + (73,856 + 2 * 73,984) + (229,760 + 3 * 295,424)
# + (918,272 + 5 * 1,180,672) + (3,671,552 + 2 * 4,720,640) + 1,024 + 513,000 = 21,795,880. Each is torchvision's
# post-activation count (11,689,512 and 21,797,672) less the BNs of its three 1x1 shortcuts, 2 * (128 + 256 + 512)
# = 1,792: moving BN-ReLU before the convolutions moves, not adds, the other batch norms.
PRERESNET_COUNTS = {"preresnet-18": 11_687_720, "preresnet-34": 21_795_880}


@pytest.mark.parametrize("name, count", PRERESNET_COUNTS.items())
def test_preresnet_parameter_count_is_preresnet_luas(name, count):
    assert num_parameters(build_model(name, 3, 1000)) == count
    assert count == num_parameters(build_model(name.removeprefix("pre"), 3, 1000)) - 1_792


@pytest.mark.parametrize("name", ["preresnet-18", "preresnet-34"])
def test_preresnet_groups_are_raw_residual_sums_of_preresnet_luas_shapes(name):
    torch.manual_seed(0)
    model = build_model(name, 3, 1000).eval()
    with torch.no_grad():
        logits, groups = model(torch.randn(1, 3, 224, 224))
    # 224 -> conv stride 2 -> 112 -> max pool stride 2 -> 56, then each group after the first halves it
    assert logits.shape == (1, 1000)
    assert [tuple(g.shape[1:]) for g in groups] == [(64, 56, 56), (128, 28, 28), (256, 14, 14), (512, 7, 7)]
    assert all((g < 0).any() for g in groups)  # raw sums, before any ReLU
    # the logits are the final BN-ReLU of the last group's sum, averaged over its 7x7 and classified
    expected = model.fc(torch.relu(model.bn(groups[3])).mean((2, 3)))
    assert torch.allclose(logits, expected, atol=1e-5)
    with torch.no_grad():
        _, small = build_model(name, 1, 10).eval()(torch.randn(2, 1, 32, 32))
    assert [g.shape[-1] for g in small] == [8, 4, 2, 1]


def test_preresnet_blocks_are_preresnet_luas():
    model = build_model("preresnet-18", 3, 1000)
    first, second = model.groups[0]
    assert first.bn0 is None and second.bn0 is not None  # no_preact: the stem's BN-ReLU feeds block 1
    assert first.shortcut is None and second.shortcut is None
    down = model.groups[1][0]
    assert (down.shortcut.kernel_size, down.shortcut.stride, down.shortcut.bias) == ((1, 1), (2, 2), None)
    assert all(m.bias is None for m in model.modules() if isinstance(m, nn.Conv2d))
    # both_preact: the 1x1 shortcut reads the BN-ReLU'd input, an identity shortcut the raw one
    torch.manual_seed(0)
    x = torch.randn(2, 64, 8, 8)
    down.eval()
    with torch.no_grad():
        o = torch.relu(down.bn0(x))
        branch = down.conv1(torch.relu(down.bn1(down.conv0(o))))
        assert torch.allclose(down(x), branch + down.shortcut(o), atol=1e-6)
        block = model.groups[0][1].eval()
        inner = block.conv1(torch.relu(block.bn1(block.conv0(torch.relu(block.bn0(x))))))
        assert torch.allclose(block(x), inner + x, atol=1e-6)


@pytest.mark.parametrize("name", ["preresnet-18", "resnet-18"])
def test_fb_init_is_preresnet_luas_conv_and_bn_init(name):
    """ConvInit: N(0, sqrt(2/n)), n = kW*kH*nOutputPlane; BNInit: weight 1, bias 0; Linear: bias 0, weight
    Torch's reset U(-1/sqrt(in), 1/sqrt(in))."""
    torch.manual_seed(0)
    model = build_model(name, 3, 1000, init="fb")
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    stem = convs[0]
    assert stem.kernel_size == (7, 7)
    assert_normal(stem.weight.detach(), math.sqrt(2 / (7 * 7 * 64)))
    last = [c for c in convs if c.kernel_size == (3, 3) and c.in_channels == 512][-1]
    assert_normal(last.weight.detach(), math.sqrt(2 / (3 * 3 * 512)))
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(torch.equal(m.weight, torch.ones_like(m.weight)) and not m.bias.any() for m in bns)
    assert not model.fc.bias.any() and 0 < model.fc.weight.abs().max() <= 1 / math.sqrt(512)
    # a fan-in draw (the authors' imagenet.py) would give the stem std sqrt(2/147), 4.6 times fb's sqrt(2/3136)
    assert stem.weight.std().item() < 0.5 * math.sqrt(2 / (7 * 7 * 3))


def test_preresnet_own_init_is_fbs_and_authors_is_utils_py():
    torch.manual_seed(0)
    own = build_model("preresnet-18", 3, 10)
    assert_normal(own.groups[2][0].conv1.weight.detach(), math.sqrt(2 / (3 * 3 * 256)))
    assert all(torch.equal(m.weight, torch.ones_like(m.weight)) for m in own.modules() if isinstance(m, nn.BatchNorm2d))
    authors = build_model("preresnet-18", 3, 10, init="authors")
    assert_normal(authors.groups[2][0].conv1.weight.detach(), math.sqrt(2 / (3 * 3 * 256)))  # fan in = fan out here
    assert_normal(authors.stem[0].weight.detach(), math.sqrt(2 / (7 * 7 * 3)))  # fan in
    assert_uniform_bn(authors)


def test_atlib_models_lists_the_preactivation_resnets():
    from atlib.models.catalog import listing

    assert "preresnet-18, preresnet-34" in listing()
