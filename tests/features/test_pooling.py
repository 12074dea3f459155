"""bpcr.features.pooling: hand-computed cases, then properties, then a reference cross-check."""
from __future__ import annotations

import inspect
import math

import pytest
import torch

from bpcr.errors import BadInput
from bpcr.features.pooling import (
    DEFAULT_PARAMS,
    MASK_OPTIONAL,
    MASK_REQUIRED,
    POOLINGS,
    attention_mask,
    check_params,
    gem,
    grmaac,
    grmac,
    l2n,
    mac,
    ramac,
    rmac,
    rmac_region_levels,
    rmac_regions,
    spoc,
    srmac,
    vamac,
)

torch.set_num_threads(1)


def t(*rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32)


def close(a, b, tol=1e-5) -> None:
    assert torch.allclose(torch.as_tensor(a, dtype=torch.float32), torch.as_tensor(b, dtype=torch.float32),
                          atol=tol, rtol=tol), (a, b)


# 3 x 3, C = 2: channel 0 is 3 at (0,0); channel 1 is 4 at (2,2); zeros elsewhere.
X33 = torch.zeros(1, 2, 3, 3)
X33[0, 0, 0, 0] = 3.0
X33[0, 1, 2, 2] = 4.0

# 3 x 3, C = 1: the values 0..8 row by row.
RAMP = torch.arange(9, dtype=torch.float32).view(1, 1, 3, 3)


# ---------------------------------------------------------------- region grid

def test_grid_4x4_by_hand():
    # w = 4. l=1: side floor(8/2)=4, one region. l=2: side floor(8/3)=2, wl2 = floor(2/2-1) = 0,
    # b = (4-2)/(2-1) = 2 -> offsets 0, 2. l=3: side floor(8/4)=2, b = (4-2)/2 = 1 -> offsets 0, 1, 2.
    assert rmac_region_levels(4, 4) == [
        [(0, 0, 4, 4)],
        [(y, x, 2, 2) for y in (0, 2) for x in (0, 2)],
        [(y, x, 2, 2) for y in (0, 1, 2) for x in (0, 1, 2)],
    ]


def test_grid_3x5_extra_steps_by_hand():
    # w = 3, long side 5. For steps s = 2..7, b = 2/(s-1) and the level-1 overlap (9 - 3b)/9 is
    # 0.333, 0.667, 0.778, ...: s = 2 is closest to 0.4, so one extra region along W.
    # l=1: side 3; W: b = (5-3)/1 = 2 -> x0 = 0, 2; H: one region.
    # l=2: side 2, wl2 = 0; W: 3 regions, b = 3/2 -> floor(0, 1.5, 3) = 0, 1, 3; H: b = 1 -> 0, 1.
    # l=3: side 1, wl2 = floor(-0.5) = -1; W: 4 regions, b = 4/3 -> floor(-1, 1/3, 5/3, 3) + 1
    #      = 0, 1, 2, 4; H: 3 regions, b = 1 -> 0, 1, 2.
    assert rmac_region_levels(3, 5) == [
        [(0, 0, 3, 3), (0, 2, 3, 3)],
        [(y, x, 2, 2) for y in (0, 1) for x in (0, 1, 3)],
        [(y, x, 1, 1) for y in (0, 1, 2) for x in (0, 1, 2, 4)],
    ]
    # The tall map is the same grid transposed.
    assert sorted(rmac_regions(5, 3)) == sorted((x, y, w, h) for y, x, h, w in rmac_regions(3, 5))


def test_grid_small_and_degenerate_maps():
    assert rmac_regions(1, 1) == [(0, 0, 1, 1)]
    # w = 1: overlap (1 - b) is closest to 0.4 for 7 steps (b = 1): 7 regions of width 1.
    assert rmac_regions(1, 7) == [(0, x, 1, 1) for x in range(7)]
    assert len(rmac_regions(7, 7)) == 1 + 4 + 9
    assert [len(level) for level in rmac_region_levels(7, 7, levels=4)] == [1, 4, 9, 16]


@pytest.mark.parametrize("H", range(1, 17))
def test_grid_regions_lie_inside_the_map(H):
    for W in range(1, 17):
        regions = rmac_regions(H, W)
        assert regions
        for y0, x0, h, w in regions:
            assert h == w >= 1 and 0 <= y0 and y0 + h <= H and 0 <= x0 and x0 + w <= W


# ---------------------------------------------------------------- hand-computed poolings

def test_mac_spoc_gem_by_hand():
    x = torch.stack([
        torch.stack([t([1, 5], [2, 0]), t([-1, -3], [-2, -4])]),
        torch.stack([t([0, 0], [0, 7]), t([2, 2], [2, 2])]),
    ])
    close(mac(x), t([5, -1], [7, 2]))
    # averages: (1+5+2+0)/4 = 2, (-1-3-2-4)/4 = -2.5, 7/4, 2
    close(spoc(x), t([2, -2.5], [1.75, 2]))
    # image 1, channel 0: zeros clamp to 1e-6, so ((3e-18 + 343)/4)^(1/3); channel 1: 2
    close(gem(x[1:], p=3.0), t([(343 / 4) ** (1 / 3), 2.0]))


def test_rmac_by_hand():
    # Regions of a 3 x 3 map: the whole map, four 2 x 2 blocks at (0,0), (0,1), (1,0), (1,1),
    # nine single positions. Region maxima, L2-normalised:
    #   whole map (3, 4) -> (0.6, 0.8)
    #   blocks: (0,0) holds (3, 0) -> (1, 0); (1,1) holds (0, 4) -> (0, 1); the others are 0
    #   positions: (0,0) -> (1, 0), (2,2) -> (0, 1), the others 0
    # sum = (0.6 + 1 + 1, 0.8 + 1 + 1) = (2.6, 2.8)
    close(rmac(X33), t([2.6, 2.8]))


def test_rmac_2x2_counts_repeated_regions():
    # 2 x 2 grid: whole map; four positions; level 3 has side 1 and offsets floor(-1 + (0, .5, 1)) + 1
    # = (0, 0, 1) per axis, so (0,0) x4, (0,1) x2, (1,0) x2, (1,1) x1.
    # Positions: (0,0) = (3,4) -> (.6,.8); (0,1) = (1,0); (1,0) = (0,2) -> (0,1); (1,1) = 0.
    # whole (.6,.8) + level 2 (1.6, 1.8) + level 3 (4*.6 + 2, 4*.8 + 2) = (6.6, 7.8)
    x = torch.stack([t([3, 1], [0, 0]), t([4, 0], [2, 0])]).unsqueeze(0)
    close(rmac(x), t([6.6, 7.8]))


def test_ramac_by_hand():
    # A = channel sum: 3 at (0,0), 4 at (2,2); mean 7/9, so M = 1 at those two positions (eq 4).
    # Region shares: whole map 2/9; blocks (0,0) and (1,1) 1/4 each, the others 0; positions 1 or 0.
    # region_l2: 2/9 (0.6, 0.8) + 1/4 (1, 0) + 1/4 (0, 1) + (1, 0) + (0, 1)
    close(ramac(X33), t([2 / 9 * 0.6 + 1.25, 2 / 9 * 0.8 + 1.25]))
    # literal eq 5: 2/9 (3, 4) + 1/4 (3, 0) + 1/4 (0, 4) + (3, 0) + (0, 4)
    close(ramac(X33, region_l2=False), t([2 / 3 + 0.75 + 3, 8 / 9 + 1 + 4]))


def test_grmac_by_hand_and_p():
    # One channel, values 0..8; min 0.
    # p = 1: t = mean = 4 -> M on 5, 6, 7, 8 = positions (1,2), (2,0), (2,1), (2,2).
    #   whole 4/9 * 8; blocks (0,1): 1/4 * 5, (1,0): 2/4 * 7, (1,1): 3/4 * 8; positions 5+6+7+8
    p1 = 4 / 9 * 8 + 1.25 + 3.5 + 6 + 26
    close(grmac(RAMP, p=1.0), t([p1]))
    # p = 4: t = (8772/9)^(1/4) = 5.59 -> M on 6, 7, 8.
    #   whole 3/9 * 8; blocks (1,0): 2/4 * 7, (1,1): 2/4 * 8; positions 6+7+8
    close(grmac(RAMP, p=4.0), t([8 / 3 + 3.5 + 4 + 21]))
    # min_share = 1/3 drops the block (0,1) (share 1/4 <= 1/3) from the p = 1 sum.
    close(grmac(RAMP, p=1.0, min_share=1 / 3), t([p1 - 1.25]))


def test_vamac_by_hand():
    x = torch.stack([
        torch.stack([t([4, 0], [0, 0]), t([0, 1], [0, 0])]),
        torch.stack([t([3, 0], [0, 1]), t([0, 2], [0, 0])]),
    ])
    # image 0: A = [[4,1],[0,0]], T = 5/4 -> only (0,0) kept -> (4, 0); plain MAC would give (4, 1).
    # image 1: A = [[3,2],[0,1]], T = 6/4 -> (0,0), (0,1) kept -> (3, 2).
    close(vamac(x, p=1.0), t([4, 0], [3, 2]))
    # image 1, p = 3: T = ((27 + 8 + 1)/4)^(1/3) = 2.08 -> only (0,0) -> (3, 0)
    close(vamac(x[1:], p=3.0), t([3, 0]))
    # saliency mask [[0,1],[1,1]] on image 1 leaves (0,1) only -> (0, 2)
    close(vamac(x[1:], p=1.0, mask=t([0, 1], [1, 1]).unsqueeze(0)), t([0, 2]))


# 3 x 3, C = 2 for GRMAAC: channel 0 is 6 at (0,0); channel 1 is 3 at (0,1) and at (1,1).
G33 = torch.zeros(1, 2, 3, 3)
G33[0, 0, 0, 0] = 6.0
G33[0, 1, 0, 1] = 3.0
G33[0, 1, 1, 1] = 3.0


def test_grmaac_by_hand():
    # A: 6 at (0,0), 3 at (0,1) and (1,1); T = 12/9 -> M on those three positions; M * x = x.
    # largest (whole map, avg, q=0.5): share 3/9, avg (6/9, 6/9) -> 0.5 * 1/3 * (2/3, 2/3)
    large = 0.5 * (1 / 3) * (2 / 3)
    # medium (2 x 2 blocks, Lp with p=3, q=0.5); zeros clamp to 1e-6:
    #   (0,0): share 3/4, ch0 (216/4)^(1/3), ch1 (54/4)^(1/3)
    #   (0,1): share 2/4, ch0 1e-6,         ch1 (54/4)^(1/3)
    #   (1,0): share 1/4, ch0 1e-6,         ch1 (27/4)^(1/3)
    #   (1,1): share 1/4, ch0 1e-6,         ch1 (27/4)^(1/3)
    med0 = 0.5 * (0.75 * 54 ** (1 / 3) + 1e-6)
    med1 = 0.5 * (1.25 * 13.5 ** (1 / 3) + 0.5 * 6.75 ** (1 / 3))
    # smallest (positions, max, q=1): (0,0) -> (6, 0), (0,1) -> (0, 3), (1,1) -> (0, 3)
    f = torch.tensor([[large + med0 + 6, large + med1 + 6]])
    close(grmaac(G33), f / f.norm())
    close(grmaac(G33).norm(), 1.0)


def test_grmaac_assignment_swaps_the_branches():
    only_large = (1.0, 0.0, 0.0)
    # largest windows average-pooled (the prose): l2n(share * (6/9, 6/9)) = (1, 1)/sqrt 2
    close(grmaac(G33, q=only_large), t([1, 1]) / math.sqrt(2))
    # largest windows max-pooled (eq 8-10's labels): l2n((6, 3)) = (2, 1)/sqrt 5
    close(grmaac(G33, q=only_large, assignment=("max", "lp", "avg")), t([2, 1]) / math.sqrt(5))
    # largest windows Lp-pooled: ((216/9)^(1/3), (54/9)^(1/3)), normalised
    v = torch.tensor([[24 ** (1 / 3), 6 ** (1 / 3)]])
    close(grmaac(G33, q=only_large, assignment=("lp", "avg", "max")), v / v.norm())


def test_grmaac_saliency_mask_goes_with_the_average_branch():
    only_large = (1.0, 0.0, 0.0)
    sal = torch.ones(1, 3, 3)
    sal[0, 0, 0] = 0.0  # hides channel 0's only activation
    # avg on the largest windows sees mask * M * x: (0, 6/9) -> (0, 1)
    close(grmaac(G33, q=only_large, mask=sal), t([0, 1]))
    # max on the largest windows ignores the saliency mask: still (2, 1)/sqrt 5
    close(grmaac(G33, q=only_large, assignment=("max", "lp", "avg"), mask=sal), t([2, 1]) / math.sqrt(5))


def test_srmac_by_hand():
    # Mask = 1 on the top-left 2 x 2 block: the activation at (2,2) is masked out.
    # whole map: share 4/9, max (3, 0) -> 4/9 (1, 0); block (0,0): share 1 -> (1, 0); other blocks
    # have shares 2/4, 2/4, 1/4 but a zero maximum; positions: (0,0) -> (1, 0), the rest zero.
    mask = torch.zeros(1, 3, 3)
    mask[0, :2, :2] = 1.0
    close(srmac(X33, mask=mask), t([4 / 9 + 2, 0]))


# ---------------------------------------------------------------- attention

@pytest.mark.parametrize("p", [0.5, 1.0, 2.0, 3.0, 5.0, 10.0])
def test_channel_mean_and_sum_give_the_same_mask(p):
    # 001 thresholds the channel average, 003 eq 2 the channel sum: same mask for every p.
    x = torch.rand(3, 16, 7, 9, generator=torch.Generator().manual_seed(int(p * 10))) * 5
    m_mean = attention_mask(x, p=p, reduce="mean")
    m_sum = attention_mask(x, p=p, reduce="sum")
    assert torch.equal(m_mean, m_sum)
    assert 0 < m_sum.sum() < m_sum.numel()


def test_attention_mask_properties():
    x = torch.rand(2, 4, 6, 6, generator=torch.Generator().manual_seed(0))
    a = x.sum(dim=1)
    # p = 1 is RA-MAC's threshold: the mean of A (000 eq 4)
    assert torch.equal(attention_mask(x, p=1.0), (a > a.mean(dim=(1, 2), keepdim=True)).float())
    # larger p, smaller mask (003 Fig. 5)
    masks = [attention_mask(x, p=p) for p in (0.5, 1.0, 2.0, 4.0)]
    for small, large in zip(masks[1:], masks[:-1]):
        assert torch.all(small <= large)
    # unchanged by a positive scale and a shift of the activations (t is offset by min A)
    assert torch.equal(attention_mask(3.0 * x + 2.0, p=2.0), attention_mask(x, p=2.0))
    # a constant map carries no attention: everything is kept
    assert torch.equal(attention_mask(torch.full((1, 3, 4, 4), 2.0)), torch.ones(1, 4, 4))
    # large p on large sums stays finite
    assert torch.isfinite(attention_mask(x * 1e4, p=40.0)).all()


def test_ramac_literal_reading_is_grmac_with_p_1():
    x = torch.rand(2, 8, 6, 9, generator=torch.Generator().manual_seed(1))
    close(ramac(x, region_l2=False), grmac(x, p=1.0), tol=1e-5)


# ---------------------------------------------------------------- properties of every pooling

def _call(name: str, x: torch.Tensor, mask: torch.Tensor | None, **kw) -> torch.Tensor:
    if name in MASK_REQUIRED or (name in MASK_OPTIONAL and mask is not None):
        kw["mask"] = mask
    return POOLINGS[name](x, **kw)


@pytest.mark.parametrize("name", sorted(POOLINGS))
@pytest.mark.parametrize("with_mask", [False, True])
def test_batch_independence(name, with_mask):
    g = torch.Generator().manual_seed(2)
    x = torch.rand(3, 6, 7, 8, generator=g)
    x[1] = x[1] * 1e4 + 50.0  # a wildly different neighbour
    x[2] = x[2] * 1e-3
    mask = torch.rand(3, 7, 8, generator=g) if with_mask else None
    if name in MASK_REQUIRED and mask is None:
        mask = torch.rand(3, 7, 8, generator=g)
    together = _call(name, x, mask)
    assert together.shape == (3, 6)
    for b in range(3):
        alone = _call(name, x[b:b + 1], None if mask is None else mask[b:b + 1])
        assert torch.allclose(together[b:b + 1], alone, rtol=1e-6, atol=0)


HOMOGENEOUS = ["mac", "spoc", "gem", "grmac", "vamac"]  # f(c x) = c f(x)
INVARIANT = ["rmac", "ramac", "srmac", "grmaac", "crow"]  # f(c x) = f(x)


@pytest.mark.parametrize("name", HOMOGENEOUS + INVARIANT)
def test_scale_behaviour(name):
    g = torch.Generator().manual_seed(3)
    x = torch.rand(2, 5, 6, 6, generator=g) + 0.1
    mask = torch.rand(2, 6, 6, generator=g)
    c = 7.5
    expected = _call(name, x, mask) * (c if name in HOMOGENEOUS else 1.0)
    assert torch.allclose(_call(name, c * x, mask), expected, rtol=1e-5, atol=1e-6)
    assert set(HOMOGENEOUS + INVARIANT) == set(POOLINGS)


@pytest.mark.parametrize("name", sorted(POOLINGS))
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs(name, dtype):
    x = (torch.rand(2, 4, 5, 7, generator=torch.Generator().manual_seed(4)) * 30).to(dtype)
    mask = torch.rand(2, 5, 7, generator=torch.Generator().manual_seed(5))
    out = _call(name, x, mask)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    assert torch.equal(out, _call(name, x.float(), mask))


def test_all_ones_mask_equals_no_mask():
    x = torch.rand(2, 6, 7, 7, generator=torch.Generator().manual_seed(6))
    ones = torch.ones(2, 7, 7)
    close(srmac(x, mask=ones), rmac(x), tol=1e-6)
    close(vamac(x, mask=ones), vamac(x), tol=0)
    close(grmaac(x, mask=ones), grmaac(x), tol=0)


def test_srmac_ignores_activations_outside_the_mask():
    g = torch.Generator().manual_seed(7)
    x = torch.rand(2, 6, 8, 8, generator=g)
    mask = torch.zeros(2, 8, 8)
    mask[:, 2:6, 1:5] = torch.rand(2, 4, 4, generator=g) + 0.1
    y = x.clone()
    y[:, :, mask[0] == 0] = 1e3  # change everything outside the salient region
    close(srmac(y, mask=mask), srmac(x, mask=mask), tol=1e-6)
    assert not torch.allclose(rmac(y), rmac(x))
    with pytest.raises(ValueError):
        srmac(x)


def test_gem_between_spoc_and_mac():
    x = torch.rand(2, 5, 4, 4, generator=torch.Generator().manual_seed(8)) * 5 + 0.01
    close(gem(x, p=1.0), spoc(x), tol=1e-6)
    close(gem(x, p=500.0), mac(x), tol=1e-2)
    a, b = gem(x, p=2.0), gem(x, p=8.0)
    assert torch.all(spoc(x) <= a + 1e-6) and torch.all(a <= b + 1e-6) and torch.all(b <= mac(x) + 1e-6)
    # large p in half precision neither overflows nor underflows
    assert torch.isfinite(gem((x * 1e3).half(), p=50.0)).all()


def test_l2n():
    close(l2n(t([3, 4], [0, 0])), t([0.6, 0.8], [0, 0]))


# ---------------------------------------------------------------- cross-check with a plain reference

def _grmaac_reference(x, p, q, assignment, lp_p, mask):
    """Per image, per region, in float64 with Python loops: 003 eq 8-12 with the module's grid."""
    out = []
    for b in range(x.shape[0]):
        xb = x[b].double()
        a = xb.sum(0)
        lo = a.min()
        thr = ((a - lo) ** p).mean() ** (1 / p) + lo
        m = (a > thr).double()
        if m.sum() == 0:
            m = torch.ones_like(m)
        y = xb * m
        ys = y * mask[b].double() if mask is not None else y
        f = torch.zeros(x.shape[1], dtype=torch.float64)
        for q_t, kind, regions in zip(q, assignment, rmac_region_levels(x.shape[2], x.shape[3], 3)):
            for y0, x0, h, w in regions:
                share = m[y0:y0 + h, x0:x0 + w].mean()
                src = ys if kind == "avg" else y
                r = src[:, y0:y0 + h, x0:x0 + w].reshape(x.shape[1], -1)
                if kind == "max":
                    v = r.max(1).values
                elif kind == "avg":
                    v = r.mean(1)
                else:
                    v = (r.clamp_min(1e-6) ** lp_p).mean(1) ** (1 / lp_p)
                f += q_t * share * v
        out.append(f / f.norm())
    return torch.stack(out).float()


@pytest.mark.parametrize("assignment", [("avg", "lp", "max"), ("max", "lp", "avg"), ("lp", "max", "avg")])
def test_grmaac_matches_reference(assignment):
    g = torch.Generator().manual_seed(9)
    x = torch.relu(torch.randn(2, 6, 9, 7, generator=g))
    mask = torch.rand(2, 9, 7, generator=g)
    kw = dict(p=2.0, q=(0.5, 0.7, 1.0), assignment=assignment, lp_p=3.0)
    close(grmaac(x, mask=mask, **kw), _grmaac_reference(x, mask=mask, **kw), tol=1e-5)
    if assignment != ("avg", "lp", "max"):
        assert not torch.allclose(grmaac(x, mask=mask, **kw), grmaac(x, mask=mask, p=2.0, q=(0.5, 0.7, 1.0)))


# ---------------------------------------------------------------- registry

def test_registry_names_and_defaults_match_the_functions():
    names = {"mac", "spoc", "gem", "rmac", "ramac", "grmac", "vamac", "grmaac", "srmac", "crow"}
    assert set(POOLINGS) == names == set(DEFAULT_PARAMS)
    assert MASK_REQUIRED == {"srmac"} and MASK_OPTIONAL == {"vamac", "grmaac"}
    for name, fn in POOLINGS.items():
        sig = inspect.signature(fn)
        defaults = {k: v.default for k, v in sig.parameters.items() if k not in ("x", "mask")}
        assert defaults == DEFAULT_PARAMS[name], name
        assert ("mask" in sig.parameters) == (name in MASK_REQUIRED | MASK_OPTIONAL)


def test_check_params():
    assert check_params("grmac") == DEFAULT_PARAMS["grmac"]
    got = check_params("grmaac", {"q": [1, 0, 0], "assignment": ["max", "lp", "avg"], "p": 2})
    assert got["q"] == (1, 0, 0) and got["assignment"] == ("max", "lp", "avg") and got["p"] == 2.0
    assert isinstance(got["p"], float)
    out = POOLINGS["grmaac"](G33, **got)
    close(out, t([2, 1]) / math.sqrt(5))
    assert check_params("grmac", {"min_share": 1 / 3})["min_share"] == pytest.approx(1 / 3)
    bad = [
        ("nope", {}),
        ("gem", {"levels": 2}),
        ("gem", {"p": 0}),
        ("gem", {"p": "3"}),
        ("rmac", {"levels": 0}),
        ("rmac", {"levels": True}),
        ("rmac", {"overlap": 1.5}),
        ("grmaac", {"q": [1, 2]}),
        ("grmaac", {"assignment": ["avg", "avg", "sum"]}),
        ("grmac", {"min_share": 1.0}),
        ("ramac", {"region_l2": 1}),
    ]
    for name, params in bad:
        with pytest.raises(BadInput) as err:
            check_params(name, params, source="config.toml")
        assert str(err.value).startswith("config.toml: ")
