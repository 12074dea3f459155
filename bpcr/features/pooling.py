"""Poolings of a convolutional feature map into one vector per image.

Every function takes ``x: (B, C, H, W)`` and returns ``(B, C)``. Each image is
pooled on its own: thresholds, minima and means are taken per image, never over
the batch, so a descriptor never changes with its batch neighbours. Half and
bfloat16 inputs are computed in float32; the result is float32 (float64 for
float64 input).

Normalisation. A function returns its equation's vector *un-normalised*, and
the extraction stage L2-normalises the final descriptor (DESIGN.md, "Feature
store"). Normalisation inside an equation is kept: R-MAC (000 eq 3) and the
poolings built on it L2-normalise each region vector before summing, and
GRMAAC returns its eq 12, which is already unit length (normalising it again is
harmless). CroW returns its L2-normalised vector too, the first of its paper's
post-processing steps (:func:`crow`).

Regions. R-MAC, RA-MAC, GRMAC, SR-MAC and GRMAAC share the rigid multi-scale
grid of Tolias et al. (000 ref [4]): see :func:`rmac_regions`.

Attention. RA-MAC (000 eq 4), GRMAC (001 eq 1) and VAMAC/GRMAAC (003 eq 2-5)
threshold a channel-reduced map; see :func:`attention_mask`.

Masks. ``mask: (B, H, W)`` with values in [0, 1] is an external (saliency)
mask at feature-map resolution (``bpcr.features.saliency.mask_for_features``). SR-MAC
requires one; VAMAC and GRMAAC accept one (003's "LDF-based" variants).

The tables at the end (``POOLINGS``, ``DEFAULT_PARAMS``, ``MASK_REQUIRED``,
``MASK_OPTIONAL``) are what the CLI and the pipeline config look names up in;
:func:`check_params` turns user-given parameters into keyword arguments.

Plugins. A pooling registered in the entry-point group ``bpcr.poolings``
(:mod:`bpcr.plugins`, docs/plugins.md) is a function ``f(x, **params)`` of the
same shape; its keyword defaults are its parameters, and a ``mask`` parameter
takes the saliency mask (optional when it has a default, required when not).
:func:`pooling_function`, :func:`pooling_params`, :func:`mask_use` and
:func:`check_params` answer for a plugin as for a built-in; the built-in tables
hold the built-ins only.
"""
from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import Tensor

from bpcr import plugins
from bpcr.errors import BadInput

Region = tuple[int, int, int, int]  # (y0, x0, h, w) on the feature map

_EPS = 1e-6
_KINDS = ("avg", "lp", "max")


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------

def l2n(x: Tensor, eps: float = _EPS) -> Tensor:
    """L2-normalise along the last dimension; a zero vector stays zero.

    The norm is clamped (not offset) by ``eps``, so ``l2n(c * x) == l2n(x)``
    exactly for any c > 0 whenever ``|x| >= eps``.
    """
    return x / x.norm(p=2, dim=-1, keepdim=True).clamp_min(eps)


def _as_float(x: Tensor) -> Tensor:
    if not isinstance(x, Tensor) or x.dim() != 4:
        raise ValueError(f"x must be a tensor of shape (B, C, H, W), got {getattr(x, 'shape', type(x))}")
    if not x.is_floating_point():
        raise ValueError(f"x must be a float tensor, got {x.dtype}")
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def _as_mask(mask: Tensor | None, x: Tensor, required: bool = False) -> Tensor | None:
    if mask is None:
        if required:
            raise ValueError("this pooling needs mask= of shape (B, H, W)")
        return None
    if not isinstance(mask, Tensor):
        mask = torch.as_tensor(mask)
    b, _, h, w = x.shape
    if tuple(mask.shape) != (b, h, w):
        raise ValueError(f"mask must have shape (B, H, W) = {(b, h, w)}, got {tuple(mask.shape)}")
    return mask.to(device=x.device, dtype=x.dtype)


def _power_mean(x: Tensor, p: float, eps: float = _EPS) -> Tensor:
    """(mean over the last two dims of clamp(x, eps)^p)^(1/p): (..., H, W) -> (...).

    Computed as m * mean((x/m)^p)^(1/p) with m the maximum, so large p (which
    tends to the maximum) neither overflows nor underflows in float32.
    """
    x = x.clamp_min(eps)
    m = x.amax(dim=(-2, -1), keepdim=True)
    return m[..., 0, 0] * (x / m).pow(p).mean(dim=(-2, -1)).pow(1.0 / p)


def _safe_pow(t: Tensor, e: float) -> Tensor:
    """t^e for t >= 0, with 0 where t = 0 and a gradient of 0 there (not the inf or nan of 0^e for e < 1)."""
    pos = t > 0
    return torch.where(pos, torch.where(pos, t, torch.ones_like(t)).pow(e), torch.zeros_like(t))


def _pool(x: Tensor, kind: str, lp_p: float) -> Tensor:
    if kind == "max":
        return x.amax(dim=(-2, -1))
    if kind == "avg":
        return x.mean(dim=(-2, -1))
    if kind == "lp":
        return _power_mean(x, lp_p)
    raise ValueError(f"unknown region pooling {kind!r}; choose from {', '.join(_KINDS)}")


def _crop(t: Tensor, r: Region) -> Tensor:
    y0, x0, h, w = r
    return t[..., y0:y0 + h, x0:x0 + w]


def _region_share(m: Tensor, regions: Sequence[Region]) -> Tensor:
    """m: (B, H, W) -> (B, R): mean of m inside each region."""
    return torch.stack([_crop(m, r).mean(dim=(-2, -1)) for r in regions], dim=1)


def _region_pool(x: Tensor, regions: Sequence[Region], kind: str = "max", lp_p: float = 3.0) -> Tensor:
    """x: (B, C, H, W) -> (B, R, C)."""
    return torch.stack([_pool(_crop(x, r), kind, lp_p) for r in regions], dim=1)


# --------------------------------------------------------------------------
# the region grid (Tolias et al., 000 ref [4]; 003 Fig. 7)
# --------------------------------------------------------------------------

def rmac_region_levels(H: int, W: int, levels: int = 3, overlap: float = 0.4) -> list[list[Region]]:
    """The R-MAC grid of an H x W feature map, one list of regions per level.

    Level l (1-based) holds square regions of side floor(2 min(H, W) / (l + 1)):
    l regions along the short side and l + extra along the long side, where
    ``extra`` (the "extra steps" rule) is chosen from 1..6 so that neighbouring
    level-1 regions overlap by the share closest to ``overlap``. Positions follow
    Tolias et al.'s MATLAB ``rmac_regions`` (and cirtorch's ``rmac``) exactly,
    in double precision; levels whose side would be 0 are empty. On tiny maps a
    region can repeat (e.g. 2 x 2, level 3); it is kept, as in the reference.
    Unlike cirtorch we do not add the whole map as an extra region: 000 eq 3
    sums the grid's regions only, and level 1 already covers the short side.
    """
    if H < 1 or W < 1:
        raise ValueError(f"feature map must be at least 1 x 1, got {H} x {W}")
    w = min(H, W)
    extra = 0
    if H != W:
        steps = range(2, 8)
        costs = [abs((w * w - w * ((max(H, W) - w) / (s - 1))) / (w * w) - overlap) for s in steps]
        extra = costs.index(min(costs)) + 1  # first minimum, as MATLAB's min
    wd, hd = (extra, 0) if H < W else (0, extra)

    def centres(l: int, side: int, wl: int, more: int) -> list[int]:
        n = l + more
        b = 0.0 if n == 1 else (side - wl) / (n - 1)
        wl2 = math.floor(wl / 2 - 1)
        return [math.floor(wl2 + k * b) - wl2 for k in range(n)]

    out: list[list[Region]] = []
    for l in range(1, levels + 1):
        wl = math.floor(2 * w / (l + 1))
        if wl == 0:
            out.append([])
            continue
        ys = centres(l, H, wl, hd)
        xs = centres(l, W, wl, wd)
        out.append([(y0, x0, wl, wl) for y0 in ys for x0 in xs])
    return out


def rmac_regions(H: int, W: int, levels: int = 3, overlap: float = 0.4) -> list[Region]:
    """All regions of :func:`rmac_region_levels`, level 1 first, row-major within a level."""
    return [r for level in rmac_region_levels(H, W, levels, overlap) for r in level]


# --------------------------------------------------------------------------
# attention (000 eq 4, 001 eq 1, 003 eq 2-5)
# --------------------------------------------------------------------------

def attention_mask(x: Tensor, p: float = 1.0, reduce: str = "sum") -> Tensor:
    """Variable attention mask M: (B, H, W) in {0, 1} (003 eq 2-5; 001 eq 1).

    A = channel sum (003 eq 2, 000 eq 4) or channel mean (001), per image;
    T = ((1/wh) sum (A - min A)^p)^(1/p) + min A; M = 1 where A > T.
    T moves with A's scale, so ``reduce`` does not change M; p = 1 gives
    T = mean(A), the RA-MAC threshold (000 eq 4); larger p gives a smaller mask.

    Decision: when no position lies strictly above T (a spatially constant map,
    e.g. a 1 x 1 feature map) the map carries no attention and M is all ones,
    rather than an all-zero mask that would erase the descriptor.
    """
    x = _as_float(x)
    if p <= 0:
        raise ValueError(f"attention p must be > 0, got {p}")
    if reduce == "sum":
        a = x.sum(dim=1)
    elif reduce == "mean":
        a = x.mean(dim=1)
    else:
        raise ValueError(f"reduce must be 'sum' or 'mean', got {reduce!r}")
    lo = a.amin(dim=(-2, -1), keepdim=True)
    d = a - lo
    # Rescaling by the per-image range keeps d^p finite for large p and sums.
    s = d.amax(dim=(-2, -1), keepdim=True)
    safe = torch.where(s > 0, s, torch.ones_like(s))
    t = lo + s * (d / safe).pow(p).mean(dim=(-2, -1), keepdim=True).pow(1.0 / p)
    m = a > t
    m = m | ~m.flatten(1).any(dim=1).view(-1, 1, 1)
    return m.to(x.dtype)


# --------------------------------------------------------------------------
# poolings
# --------------------------------------------------------------------------

def mac(x: Tensor) -> Tensor:
    """MAC, 000 eq 1 (003 eq 1): per channel, the maximum over all H x W positions."""
    return _as_float(x).amax(dim=(-2, -1))


def spoc(x: Tensor) -> Tensor:
    """SPoC, 000 eq 2: per channel, the *average* over H x W.

    Babenko et al. sum; 000 re-formulates it as an average ("we re-formulate the
    features as average-pooled features"). We average, which differs from the sum
    only by the constant H*W, removed by the final L2 normalisation.
    """
    return _as_float(x).mean(dim=(-2, -1))


def gem(x: Tensor, p: float = 3.0, eps: float = 1e-6) -> Tensor:
    """GeM (Radenovic et al.): (mean over H x W of clamp(x, eps)^p)^(1/p).

    p = 1 is SPoC's average (for x >= eps); p -> inf tends to MAC. Inputs are
    clamped to ``eps`` so non-integer powers of negative values never arise.
    """
    if p <= 0:
        raise ValueError(f"gem p must be > 0, got {p}")
    return _power_mean(_as_float(x), p, eps)


def rmac(x: Tensor, levels: int = 3, overlap: float = 0.4) -> Tensor:
    """R-MAC, 000 eq 3: sum over the grid of L2-normalised region maxima.

    f = sum_k R_k / |R_k|, R_k = per-channel max inside region k of
    :func:`rmac_regions` (``levels`` = L, ``overlap`` = the level-1 overlap).
    The result is not normalised again (module docstring).
    """
    x = _as_float(x)
    regions = rmac_regions(x.shape[-2], x.shape[-1], levels, overlap)
    return l2n(_region_pool(x, regions)).sum(dim=1)


def ramac(x: Tensor, levels: int = 3, overlap: float = 0.4, region_l2: bool = True) -> Tensor:
    """RA-MAC, 000 eq 4-5: R-MAC regions weighted by their attended share.

    A = channel sum, M = 1 where A > mean(A) (eq 4; :func:`attention_mask` with
    p = 1); f = sum_k (sum_{(i,j) in r_k} M_ij / size(r_k)) R_k (eq 5).

    Open decision: eq 5 writes R_k without the normalisation eq 3 gives it. RA-MAC
    re-weights R-MAC's sum ("assign larger weights to the regions containing
    objects", 000 §3.3.4), so by default each region vector is L2-normalised as in
    eq 3 (``region_l2=True``). ``region_l2=False`` is the literal eq-5 reading,
    which is exactly GRMAC (001 eq 2) with p = 1.
    """
    x = _as_float(x)
    regions = rmac_regions(x.shape[-2], x.shape[-1], levels, overlap)
    share = _region_share(attention_mask(x, p=1.0, reduce="sum"), regions)
    r = _region_pool(x, regions)
    if region_l2:
        r = l2n(r)
    return (share.unsqueeze(-1) * r).sum(dim=1)


def grmac(
    x: Tensor, p: float = 1.0, levels: int = 3, overlap: float = 0.4, min_share: float | None = None
) -> Tensor:
    """GRMAC, 001 eq 1-2 (the 2019 winner's descriptor).

    X~ = channel average; t = ((1/wh) sum (X~ - min X~)^p)^(1/p) + min X~ (eq 1);
    v = sum over regions R_s of (share of R_s's positions with X~ > t) * GMP(X_{R_s})
    (eq 2). The regions R are the R-MAC grid (:func:`rmac_regions`; 003 Fig. 7
    shows three scales of sliding windows); GMP(X_R) is the raw per-channel region
    maximum, not normalised, as eq 2 prints it. 001 uses p = 1.

    ``min_share``: the challenge teams' code also zeroes every region whose share
    is <= 1/3. That step is not in eq 2, so it is off by default
    (``min_share=None``); pass ``min_share=1/3`` to reproduce it.
    """
    x = _as_float(x)
    regions = rmac_regions(x.shape[-2], x.shape[-1], levels, overlap)
    share = _region_share(attention_mask(x, p=p, reduce="mean"), regions)
    if min_share is not None:
        share = torch.where(share > min_share, share, torch.zeros_like(share))
    return (share.unsqueeze(-1) * _region_pool(x, regions)).sum(dim=1)


def vamac(x: Tensor, p: float = 1.0, mask: Tensor | None = None) -> Tensor:
    """VAMAC, 003 eq 2-7: MAC over the feature map filtered by the variable mask.

    M from the channel-summed map with parameter p (eq 2-5, :func:`attention_mask`);
    y = M * x (eq 6); f_c = max over y_c (eq 7). 003 uses p = 1 (Table 5).
    With ``mask`` (the saliency mask, 003 §3.2 "LDF-based VAMAC") the already
    filtered map is multiplied by it as well; M is computed from x alone.
    Filtered positions become 0 and still take part in the maximum, as eq 6-7
    print it. 003's middle-layer features (§3.4) are this pooling applied by the
    extraction stage to an intermediate stage's feature map.
    """
    x = _as_float(x)
    mask = _as_mask(mask, x)
    m = attention_mask(x, p=p, reduce="sum")
    if mask is not None:
        m = m * mask
    return (x * m.unsqueeze(1)).amax(dim=(-2, -1))


def grmaac(
    x: Tensor,
    p: float = 1.0,
    q: Sequence[float] = (0.5, 0.5, 1.0),
    assignment: Sequence[str] = ("avg", "lp", "max"),
    lp_p: float = 3.0,
    overlap: float = 0.4,
    mask: Tensor | None = None,
) -> Tensor:
    """GRMAAC, 003 eq 8-12: three window scales, three poolings, attention-weighted.

    R_1, R_2, R_3 = levels 1, 2, 3 of the R-MAC grid (largest, medium, smallest
    windows). Each region R_{k,t} is pooled with ``assignment[t]`` (one of
    "avg", "lp", "max"), weighted by q_t times its share of the variable mask M
    (eq 11, M from :func:`attention_mask` with parameter p), and the sum is
    L2-normalised (eq 12). 003 uses p = 1 and q = (0.5, 0.5, 1.0) (§4.4).

    Known inconsistency: 003's prose assigns Avg-pooling to the largest windows,
    Lp to the medium and Max to the smallest, while eq 8-10 print the opposite
    labels. We follow the prose, which §3.3's masking argument also relies on:
    the default ``assignment`` is ("avg", "lp", "max") for (largest, medium,
    smallest); pass ("max", "lp", "avg") for the equations' reading.

    Open decisions: every branch pools the variable-masked map M * x; the branch
    that average-pools additionally multiplies by the saliency ``mask`` when
    given (003 §3.3: "To the Avg-pooling part, we use the variable mask and the
    saliency mask"), wherever ``assignment`` puts it. Lp-pooling is the power
    mean (mean x^lp_p)^(1/lp_p) on values clamped to 1e-6; 003 gives no
    exponent, ``lp_p = 3`` is GeM's usual value.
    """
    x = _as_float(x)
    mask = _as_mask(mask, x)
    if len(q) != 3 or len(assignment) != 3:
        raise ValueError("q and assignment need one entry per window scale (3)")
    bad = [k for k in assignment if k not in _KINDS]
    if bad:
        raise ValueError(f"unknown region pooling {bad[0]!r}; choose from {', '.join(_KINDS)}")
    m = attention_mask(x, p=p, reduce="sum")
    y = x * m.unsqueeze(1)
    y_salient = y if mask is None else y * mask.unsqueeze(1)
    scales = rmac_region_levels(x.shape[-2], x.shape[-1], 3, overlap)
    f = torch.zeros(x.shape[:2], dtype=x.dtype, device=x.device)
    for q_t, kind, regions in zip(q, assignment, scales):
        if not regions or q_t == 0:
            continue
        share = _region_share(m, regions)
        pooled = _region_pool(y_salient if kind == "avg" else y, regions, kind, lp_p)
        f = f + q_t * (share.unsqueeze(-1) * pooled).sum(dim=1)
    return l2n(f)


def srmac(x: Tensor, mask: Tensor | None = None, levels: int = 3, overlap: float = 0.4) -> Tensor:
    """SR-MAC, 002 Appendix A.5 (Table A2): R-MAC restricted to the salient region.

    002 describes SR-MAC only in words ("uses the salient region ... to obtain the
    objects' locations", "eliminates the interference of background information").
    Decision: y = mask * x; f = sum_k s_k * y_k / |y_k|, with y_k the per-channel
    max of y in R-MAC region k and s_k the mean of the mask inside it, i.e.
    R-MAC (000 eq 3) on the masked map with RA-MAC-style region weights
    (000 eq 5) taken from the saliency mask instead of the activations.
    Positions where the mask is 0 have no influence; an all-ones mask gives
    exactly :func:`rmac`. ``mask`` (B, H, W) is required.
    """
    x = _as_float(x)
    mask = _as_mask(mask, x, required=True)
    regions = rmac_regions(x.shape[-2], x.shape[-1], levels, overlap)
    share = _region_share(mask, regions)
    r = l2n(_region_pool(x * mask.unsqueeze(1), regions))
    return (share.unsqueeze(-1) * r).sum(dim=1)


def crow(x: Tensor, a: float = 2.0, b: float = 2.0) -> Tensor:
    """CroW: cross-dimensionally weighted sum-pooling (Kalantidis, Mellina and Osindero, ECCV 2016 workshops).

    Not one of the five seed papers: the 2018 challenge's third-placed team used ResNet-50 with CroW. Cited by the
    paper's sections (arXiv:1512.04065) and its authors' code (``yahoo/crow``, ``crow.py``).

    f_k = beta_k sum_ij alpha_ij x_kij: weighting, then sum-pooling (§3.2, "Cross-dimensional weighting").
    alpha = (S / ||S||_a)^(1/b) with S = sum_k x_k (H, W) and ||S||_a = (sum_ij S_ij^a)^(1/a) (§4.1, "Response
    aggregation for spatial weighting"): S is divided by its L-a norm, not its sum, and the power 1/b comes after
    the division; a = b = 2, the paper's choice and ``crow.py``'s defaults.
    beta_k = log(sum_h Q_h / Q_k) with Q_k the share of the H x W positions where x_k > 0 (§4.2, "Sparsity
    sensitive channel weighting").
    f is L2-normalised: §3's post-processing is L2, PCA-whitening, L2 again; whitening is the extraction's
    (``--pca-whiten``) or ``bpcr whiten``'s, so this pooling stops after the first L2.

    Paper and code differ on beta: the paper prints log((K eps + sum_h Q_h) / (eps + Q_k)) with a small eps,
    ``crow.py`` has no eps and gives a channel with no non-zero response the weight 0. We follow the code. The two
    give the same f_k for such a channel (its weighted sum is 0 whatever its weight) and differ on the others by a
    relative O(eps / Q_k).

    Decisions: x is clamped at 0 first; the paper pools ReLU outputs, and a middle layer's map (003 §3.4) can hold
    negative values, for which S^(1/b) is undefined and "non-zero" would count negative responses. A map with no
    positive value gives the zero vector (``crow.py`` divides 0 by 0). beta is a count, so it passes no gradient;
    alpha does, with gradient 0 where S = 0.
    """
    if a <= 0 or b <= 0:
        raise ValueError(f"crow a and b must be > 0, got a={a}, b={b}")
    x = _as_float(x).clamp_min(0.0)
    s = x.sum(dim=1)  # (B, H, W)
    # Dividing by the maximum first keeps S^a finite for large a; alpha is unchanged by the rescaling.
    m = s.amax(dim=(-2, -1), keepdim=True)
    r = s / torch.where(m > 0, m, torch.ones_like(m))
    r = r / _safe_pow(r, a).sum(dim=(-2, -1), keepdim=True).pow(1.0 / a).clamp_min(torch.finfo(x.dtype).tiny)
    alpha = _safe_pow(r, 1.0 / b)
    q = (x > 0).sum(dim=(-2, -1)).to(x.dtype) / (x.shape[-2] * x.shape[-1])  # (B, K)
    q_safe = torch.where(q > 0, q, torch.ones_like(q))
    beta = torch.where(q > 0, torch.log(q.sum(dim=1, keepdim=True) / q_safe), torch.zeros_like(q))
    return l2n(beta * (x * alpha.unsqueeze(1)).sum(dim=(-2, -1)))


# --------------------------------------------------------------------------
# registry (names are data: the CLI and the pipeline config both look here)
# --------------------------------------------------------------------------

POOLINGS: dict[str, Callable[..., Tensor]] = {
    "mac": mac,
    "spoc": spoc,
    "gem": gem,
    "rmac": rmac,
    "ramac": ramac,
    "grmac": grmac,
    "vamac": vamac,
    "grmaac": grmaac,
    "srmac": srmac,
    "crow": crow,
}

MASK_REQUIRED: frozenset[str] = frozenset({"srmac"})
MASK_OPTIONAL: frozenset[str] = frozenset({"vamac", "grmaac"})

DEFAULT_PARAMS: dict[str, dict[str, Any]] = {
    "mac": {},
    "spoc": {},
    "gem": {"p": 3.0, "eps": 1e-6},
    "rmac": {"levels": 3, "overlap": 0.4},
    "ramac": {"levels": 3, "overlap": 0.4, "region_l2": True},
    "grmac": {"p": 1.0, "levels": 3, "overlap": 0.4, "min_share": None},
    "vamac": {"p": 1.0},
    "grmaac": {"p": 1.0, "q": (0.5, 0.5, 1.0), "assignment": ("avg", "lp", "max"), "lp_p": 3.0, "overlap": 0.4},
    "srmac": {"levels": 3, "overlap": 0.4},
    "crow": {"a": 2.0, "b": 2.0},
}


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


# parameter name -> (accepts value, what it must be)
_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "p": (lambda v: _is_num(v) and v > 0, "a number > 0"),
    "lp_p": (lambda v: _is_num(v) and v > 0, "a number > 0"),
    "eps": (lambda v: _is_num(v) and v > 0, "a number > 0"),
    "a": (lambda v: _is_num(v) and v > 0, "a number > 0"),
    "b": (lambda v: _is_num(v) and v > 0, "a number > 0"),
    "levels": (lambda v: isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 10, "an integer from 1 to 10"),
    "overlap": (lambda v: _is_num(v) and 0 < v < 1, "a number between 0 and 1"),
    "region_l2": (lambda v: isinstance(v, bool), "true or false"),
    "min_share": (lambda v: v is None or (_is_num(v) and 0 <= v < 1), "empty or a number in [0, 1)"),
    "q": (lambda v: isinstance(v, (list, tuple)) and len(v) == 3 and all(_is_num(e) and e >= 0 for e in v),
          "three numbers >= 0 (largest, medium, smallest windows)"),
    "assignment": (lambda v: isinstance(v, (list, tuple)) and len(v) == 3 and all(e in _KINDS for e in v),
                   "three of avg, lp, max (largest, medium, smallest windows)"),
}


def check_params(name: str, params: Mapping[str, Any] | None = None, source: str | None = None) -> dict[str, Any]:
    """Defaults of pooling ``name`` overlaid with ``params``, checked.

    Returns the keyword arguments to call ``POOLINGS[name]`` with (lists become
    tuples, integers given for float parameters become floats). An unknown name
    or parameter, or a value out of range, raises ``BadInput(source, None, ...)``.
    """
    plugins.check(plugins.POOLINGS, POOLINGS)
    if name not in POOLINGS:
        plugin = _plugin(name)
        if plugin is None:
            raise BadInput(source, None, f"unknown pooling {name!r}; choose from {', '.join(sorted(pooling_names()))}")
        return _check_plugin_params(name, plugin.params, params, source)
    out = dict(DEFAULT_PARAMS[name])
    for key, value in (params or {}).items():
        if key not in out:
            allowed = ", ".join(sorted(out)) or "none"
            raise BadInput(source, None, f"pooling {name!r} has no parameter {key!r} (allowed: {allowed})")
        ok, what = _RULES[key]
        if not ok(value):
            raise BadInput(source, None, f"pooling {name!r}: {key} must be {what}, got {value!r}")
        if isinstance(value, list):
            value = tuple(value)
        if isinstance(value, int) and isinstance(DEFAULT_PARAMS[name][key], float):
            value = float(value)
        out[key] = value
    return out


# --------------------------------------------------------------------------
# plugins (entry-point group bpcr.poolings; bpcr.plugins)
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class PluginPooling:
    """A plugin pooling as this table holds it: its function, its parameters' defaults, its use of the mask."""

    function: Callable[..., Tensor]
    params: dict[str, Any]
    mask: str | None  # "required", "optional" or None


_PLUGINS: dict[str, PluginPooling] = {}


def _plugin(name: str) -> PluginPooling | None:
    """Plugin pooling ``name`` (imported once), None when no plugin has that name."""
    if name in _PLUGINS:
        return _PLUGINS[name]
    function = plugins.get(plugins.POOLINGS, name, POOLINGS)
    if function is None:
        return None
    where = plugins.provenance(plugins.POOLINGS, name)
    if not callable(function):
        raise BadInput(None, None, f"pooling plugin {name!r} of {where['plugin']} ({where['entry_point']}) is not a "
                                   "function f(x, **params)")
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        raise BadInput(None, None, f"pooling plugin {name!r} of {where['plugin']}: its signature cannot be read; "
                                   "it must be a function f(x, **params)") from None
    params: dict[str, Any] = {}
    mask = None
    for p in list(signature.parameters.values())[1:]:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if p.name == "mask":
            mask = "required" if p.default is p.empty else "optional"
        elif p.default is p.empty:
            raise BadInput(None, None, f"pooling plugin {name!r} of {where['plugin']}: parameter {p.name!r} has no "
                                       "default; a pooling's parameters are keyword arguments with defaults")
        else:
            params[p.name] = p.default
    _PLUGINS[name] = PluginPooling(function, params, mask)
    return _PLUGINS[name]


def pooling_names() -> tuple[str, ...]:
    """The built-in poolings' names, then the plugins' (refusing a plugin named as a built-in)."""
    return plugins.known(plugins.POOLINGS, POOLINGS)


def _known(name: str) -> PluginPooling | None:
    """None for a built-in; the plugin for a plugin; BadInput for neither."""
    if name in POOLINGS:
        return None
    plugin = _plugin(name)
    if plugin is None:
        raise BadInput(None, None, f"unknown pooling {name!r}; choose from {', '.join(sorted(pooling_names()))}")
    return plugin


def pooling_function(name: str) -> Callable[..., Tensor]:
    """The function of pooling ``name``, a built-in's (``POOLINGS[name]``) or a plugin's."""
    plugin = _known(name)
    return POOLINGS[name] if plugin is None else plugin.function


def pooling_params(name: str) -> dict[str, Any]:
    """The default parameters of pooling ``name`` (``DEFAULT_PARAMS[name]`` for a built-in)."""
    plugin = _known(name)
    return dict(DEFAULT_PARAMS[name] if plugin is None else plugin.params)


def mask_use(name: str) -> str | None:
    """"required" (as srmac), "optional" (as vamac and grmaac) or None: how pooling ``name`` takes the mask."""
    plugin = _known(name)
    if plugin is not None:
        return plugin.mask
    return "required" if name in MASK_REQUIRED else "optional" if name in MASK_OPTIONAL else None


def plugin_provenance(name: str) -> dict[str, str] | None:
    """What a store's meta.json records of a plugin pooling (:func:`bpcr.plugins.provenance`); None for a built-in."""
    return None if _known(name) is None else plugins.provenance(plugins.POOLINGS, name)


def _plugin_value(default: Any, value: Any) -> tuple[bool, str]:
    """Whether ``value`` can stand where a plugin's parameter defaults to ``default``, and what it must be."""
    if default is None:
        return True, "any value"
    if isinstance(default, bool):
        return isinstance(value, bool), "true or false"
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool), "an integer"
    if isinstance(default, float):
        return _is_num(value), "a number"
    if isinstance(default, str):
        return isinstance(value, str), "a string"
    if isinstance(default, (list, tuple)):
        return isinstance(value, (list, tuple)), "an array"
    return True, "any value"


def _check_plugin_params(name: str, defaults: Mapping[str, Any], params: Mapping[str, Any] | None,
                         source: str | None) -> dict[str, Any]:
    """:func:`check_params` for a plugin: its keyword defaults overlaid with ``params``, each of its default's kind."""
    out = dict(defaults)
    for key, value in (params or {}).items():
        if key not in out:
            allowed = ", ".join(sorted(out)) or "none"
            raise BadInput(source, None, f"pooling {name!r} has no parameter {key!r} (allowed: {allowed})")
        ok, what = _plugin_value(defaults[key], value)
        if not ok:
            raise BadInput(source, None, f"pooling {name!r}: {key} must be {what}, got {value!r}")
        if isinstance(value, list):
            value = tuple(value)
        if isinstance(value, int) and not isinstance(value, bool) and isinstance(defaults[key], float):
            value = float(value)
        out[key] = value
    return out
