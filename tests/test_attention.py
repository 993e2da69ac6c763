import math

import pytest
import torch

from atlib.attention import at_loss, attention, distance, f_max, f_sum, normalize, resize_to

# Two channels over two positions: channel 0 = [1, -2], channel 1 = [3, 4].
A = torch.tensor([[[[1.0, -2.0]], [[3.0, 4.0]]]])


def test_f_sum_by_hand():
    # channel mean of |a|^p (a sum up to the factor C, which normalisation removes)
    assert f_sum(A, 1).flatten().tolist() == [2.0, 3.0]
    assert f_sum(A, 2).flatten().tolist() == [5.0, 10.0]
    assert f_sum(A, 4).flatten().tolist() == [41.0, 136.0]


def test_f_max_by_hand():
    assert f_max(A, 1).flatten().tolist() == [3.0, 4.0]
    assert f_max(A, 2).flatten().tolist() == [9.0, 16.0]


def test_normalize_l2_and_l1():
    q = torch.tensor([[[5.0, 10.0]]])
    assert torch.allclose(normalize(q, "l2"), torch.tensor([[1, 2]]) / math.sqrt(5))
    assert torch.allclose(normalize(q, "l1"), torch.tensor([[1 / 3, 2 / 3]]))


def test_at_loss_by_hand_code_and_paper_form():
    s = A  # F2_sum map [5, 10] -> [1, 2]/sqrt5
    t = torch.tensor([[[[2.0, 1.0]]]]).sqrt()  # one channel, F2_sum map [2, 1] -> [2, 1]/sqrt5
    # diff = [-1, 1]/sqrt5: code = mean of squares; paper = 1/2 * ||diff|| / (batch * positions)
    assert at_loss(s, t, form="code").item() == pytest.approx(0.2)
    assert at_loss(s, t, form="paper").item() == pytest.approx(0.5 * math.sqrt(0.4) / 2)


def test_at_loss_zero_for_identical_and_scale_invariant():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(4, 8, 6, 6, generator=g), torch.randn(4, 16, 6, 6, generator=g)
    assert at_loss(s, s).item() == 0.0
    base = at_loss(s, t)
    assert base.item() > 0
    for c in (1e-3, 7.0, 1e3):
        assert at_loss(c * s, t).item() == pytest.approx(base.item(), rel=1e-5)
        assert at_loss(s, c * t).item() == pytest.approx(base.item(), rel=1e-5)


def test_at_loss_resizes_to_the_larger_map_or_refuses():
    s, t = torch.rand(2, 4, 4, 4), torch.rand(2, 4, 8, 8)
    up = resize_to(f_sum(s, 2), (8, 8))
    expected = (normalize(up) - attention(t)).pow(2).mean()
    assert at_loss(s, t).item() == pytest.approx(expected.item())
    with pytest.raises(ValueError, match="differ"):
        at_loss(s, t, resize=False)


def test_unknown_mapping_and_form_are_errors():
    with pytest.raises(ValueError, match="mapping"):
        attention(A, mapping="mean")
    with pytest.raises(ValueError, match="form"):
        distance(torch.ones(1, 2), form="other")
