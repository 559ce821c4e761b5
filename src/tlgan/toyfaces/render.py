"""Vectorised renderer of toyfaces: a dict of factors -> cartoon faces, (N, 3, R, R) in [-1, 1].

Every shape is an alpha mask ``sigmoid(signed distance / softness)`` composited over the
canvas in painter's order, drawn at ``resolution * supersample`` and average-pooled down,
so edges are smooth and the image is a differentiable function of the factors.

Geometry lives in a *canonical face frame*: x to the right, y down, the face centred, one
unit = half the image width at scale 1 (a 64 px pixel is 1/32 unit). Scale and shift map
image coordinates to this frame; yaw then warps x (squashing the side the face turns
towards) and moves each feature sideways in proportion to its depth. Because the map is
separable, x lives in an (N, 1, 1, W) tensor and y in an (N, 1, H, 1) tensor and most work
is done on those vectors; full (H, W) work is confined to a window around each feature.
Windows depend only on the nuisance ranges, never on the batch, so a face does not change
with the faces drawn beside it (up to float32 rounding, below 1e-5).

On CPU the batch is drawn in chunks of 16 faces (small enough to stay in cache), one chunk
per thread, with torch's own per-operation threading switched off meanwhile.

Factor names and units are those of :func:`tlgan.toyfaces.world.factors`.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from functools import lru_cache, partial

import torch
import torch.nn.functional as F

from tlgan.errors import TlganError
from tlgan.toyfaces import world

# Colours, RGB in [0, 1].
SKIN = (0.87, 0.66, 0.52)
SKIN_PALE = (0.99, 0.92, 0.88)
HAIR_AUBURN = (0.66, 0.22, 0.08)  # shown when no hair-colour attribute is active
HAIR_BLACK = (0.09, 0.08, 0.08)
HAIR_BLOND = (0.95, 0.82, 0.42)
HAIR_BROWN = (0.53, 0.34, 0.17)
HAIR_SILVER = (0.82, 0.82, 0.84)
GRAY_MIX = 0.9  # how far Gray_Hair pulls its strands to silver
STRAND_PERIOD = 0.17  # canonical units (about 5.4 px at 64 px)
GRAY_PERIOD = 0.125  # about 4 px
SHIRT = (0.26, 0.30, 0.40)
EYE_WHITE = (0.97, 0.97, 0.97)
IRIS = (0.28, 0.20, 0.14)
PUPIL = (0.03, 0.03, 0.03)
LIPS = (0.78, 0.42, 0.42)
LIPSTICK = (0.82, 0.04, 0.14)
MOUTH_INSIDE = (0.24, 0.04, 0.07)
TEETH = (0.98, 0.98, 0.95)
BLUSH = (0.97, 0.45, 0.45)
FRAMES = (0.05, 0.05, 0.07)
LENS = (0.75, 0.88, 1.0)
HAT = (0.05, 0.58, 0.48)
HAT_BRIM = (0.02, 0.30, 0.25)
BACKGROUND_SATURATION = 0.35
LIGHT_STRENGTH = 0.12  # brightness changes by +-12% across the image

# Canonical layout (units of half an image width).
HEAD_CY, HEAD_RY = 0.03, 0.62
HEAD_RX_FEMALE, HEAD_RX_MALE = 0.46, 0.50
EYE_Y, EYE_DX = 0.0, 0.2
BROW_Y = -0.155
NOSE_Y = 0.21
MOUTH_Y = 0.405
HAIRLINE_Y = -0.34
CAP_BOTTOM_Y = -0.5
SIDE_HAIR_X = 0.385
YAW_SHIFT = 0.13  # sideways shift of a feature of depth 1 at full yaw
YAW_WARP = 0.22  # x -> x + warp * x^2 at full yaw
# Nuisance ranges (those world.factors produces); the renderer clamps to them.
SCALE_RANGE = (0.92, 1.08)
SHIFT_RANGE_PX = 3.0  # pixels at 64 px
YAW_RANGE_DEG = 30.0

_ATTRIBUTE_FACTORS = tuple(world.FACTOR_OF[a] for a in world.ATTRIBUTES)


def _color(rgb, like: torch.Tensor) -> torch.Tensor:
    return torch.tensor(rgb, dtype=like.dtype, device=like.device).view(1, 3, 1, 1)


def _col(t: torch.Tensor) -> torch.Tensor:
    """(N,) -> (N, 1, 1, 1) for broadcasting against masks."""
    return t.reshape(-1, 1, 1, 1)


def _hsv_to_rgb(h: torch.Tensor, s: float, v: torch.Tensor) -> torch.Tensor:
    """Hue in [0, 1), saturation, value (N,) -> RGB (N, 3)."""
    n = torch.tensor([5.0, 3.0, 1.0], dtype=h.dtype, device=h.device)
    k = torch.remainder(n[None] + 6.0 * h[:, None], 6.0)
    ramp = torch.clamp(torch.minimum(k, 4.0 - k), 0.0, 1.0)
    return v[:, None] * (1.0 - s * ramp)


@lru_cache(maxsize=512)
def _window(res: int, x0: float, x1: float, y0: float, y1: float) -> tuple[slice, slice]:
    xs, ys = [], []
    for scale in SCALE_RANGE:
        for shift in (-SHIFT_RANGE_PX / 32.0, SHIFT_RANGE_PX / 32.0):
            ys += [y0 * scale + shift, y1 * scale + shift]
            for a in (-YAW_WARP, 0.0, YAW_WARP):
                for xf in (x0, x1):
                    # Invert x -> x + a x^2 (monotone for |a| < 0.5): x = 2 X / (1 + sqrt(1 + 4 a X)).
                    x = 2.0 * xf / (1.0 + math.sqrt(max(1e-6, 1.0 + 4.0 * a * xf)))
                    xs.append(x * scale + shift)
    margin = 3
    to_index = lambda v: (v + 1.0) * (res / 2.0) - 0.5  # noqa: E731
    c0 = max(0, int(math.floor(to_index(min(xs)))) - margin)
    c1 = min(res, int(math.ceil(to_index(max(xs)))) + margin + 1)
    r0 = max(0, int(math.floor(to_index(min(ys)))) - margin)
    r1 = min(res, int(math.ceil(to_index(max(ys)))) + margin + 1)
    if c1 <= c0 or r1 <= r0:
        return slice(0, 0), slice(0, 0)
    return slice(r0, r1), slice(c0, c1)


class _Painter:
    """A canvas plus the per-face canonical coordinates, drawn into window by window."""

    def __init__(self, f: dict[str, torch.Tensor], res: int, like: torch.Tensor):
        self.res = res
        self.n = like.shape[0]
        self.sigma = 1.1 / res  # edge softness: about half a pixel of the drawing grid
        dtype, device = like.dtype, like.device
        self.scale = f["scale"].clamp(*SCALE_RANGE)
        self.sx = (
            f["shift_x"].clamp(-SHIFT_RANGE_PX, SHIFT_RANGE_PX) / 32.0
        )  # pixels at 64 px -> canonical units
        self.sy = f["shift_y"].clamp(-SHIFT_RANGE_PX, SHIFT_RANGE_PX) / 32.0
        self.warp = YAW_WARP * self.yaw_n(f)
        u = (torch.arange(res, dtype=dtype, device=device) + 0.5) * (2.0 / res) - 1.0
        self.u = u
        x = (u[None] - self.sx[:, None]) / self.scale[:, None]
        self.x = (x + self.warp[:, None] * x * x).reshape(self.n, 1, 1, res)
        self.y = ((u[None] - self.sy[:, None]) / self.scale[:, None]).reshape(self.n, 1, res, 1)
        self.canvas: torch.Tensor | None = None

    @staticmethod
    def yaw_n(f) -> torch.Tensor:
        return (f["yaw"] / YAW_RANGE_DEG).clamp(-1.0, 1.0)

    def window(self, x0: float, x1: float, y0: float, y1: float) -> tuple[slice, slice]:
        """Pixel rows and columns that can hold canonical box [x0, x1] x [y0, y1] for any face.

        Computed from the nuisance ranges, not from the batch, so a face's pixels never depend
        on which other faces share its batch.
        """
        return _window(self.res, x0, x1, y0, y1)

    def coords(self, win) -> tuple[torch.Tensor, torch.Tensor]:
        rows, cols = win
        return self.x[..., cols], self.y[:, :, rows, :]

    def paint(self, win, alpha: torch.Tensor, color: torch.Tensor) -> None:
        """Composite ``color`` ((1|N), 3, 1, 1) with ``alpha`` (N, 1, h, w) into the window."""
        rows, cols = win
        if rows.stop - rows.start <= 0 or cols.stop - cols.start <= 0:
            return
        full = rows == slice(0, self.res) and cols == slice(0, self.res)
        if full:
            self.canvas = torch.lerp(self.canvas, color, alpha)
            return
        region = self.canvas[:, :, rows, cols]
        if self.canvas.requires_grad or alpha.requires_grad or color.requires_grad:
            # Out of place, so autograd keeps the values lerp saw before the write.
            self.canvas[:, :, rows, cols] = torch.lerp(region.clone(), color, alpha)
        else:
            region.lerp_(color, alpha)

    # --- mask primitives (all return (N, 1, h, w) or broadcastable pieces) -------------
    def step(self, d: torch.Tensor) -> torch.Tensor:
        """Soft inside-indicator of a signed distance (positive inside)."""
        return torch.sigmoid(d / self.sigma)

    def ellipse(self, x, y, cx, cy, rx, ry) -> torch.Tensor:
        """Soft mask of the ellipse centre (cx, cy), radii (rx, ry); any may be (N,1,1,1) tensors."""
        r = (
            torch.sqrt(rx * ry)
            if isinstance(rx, torch.Tensor) or isinstance(ry, torch.Tensor)
            else math.sqrt(rx * ry)
        )
        gain = r / (2.0 * self.sigma)
        # gain * (1 - q) approximates signed distance / softness near the outline. Split into an
        # x part and a y part so that (for radii that vary at most with y) only one product, one
        # subtraction and the sigmoid touch every pixel of the window.
        px = (x - cx) ** 2 * (gain / rx**2)
        py = gain - (y - cy) ** 2 * (gain / ry**2)
        return torch.sigmoid(py - px)


def _check_factors(factors: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    if not isinstance(factors, dict):
        raise TlganError(
            f"render() takes a dict of factors (see tlgan.toyfaces.world.factors); got {type(factors).__name__}"
        )
    missing = [k for k in world.FACTOR_NAMES if k not in factors]
    if missing:
        raise TlganError(
            f"factors are missing {', '.join(missing)}; build them with tlgan.toyfaces.world.factors(z)"
        )
    out = {}
    n = None
    like = None
    for key in world.FACTOR_NAMES:
        value = torch.as_tensor(factors[key])
        if not value.is_floating_point():
            value = value.float()
        value = value.reshape(-1)
        if n is None:
            n, like = value.shape[0], value
        if value.shape[0] != n:
            raise TlganError(
                f"factor {key!r} has {value.shape[0]} values but {world.FACTOR_NAMES[0]!r} has {n}; "
                "all factors need one value per face"
            )
        out[key] = value.to(like.dtype)
    if n == 0:
        raise TlganError("factors hold no faces (N = 0)")
    return out, like


def hair_color(f: dict[str, torch.Tensor]) -> torch.Tensor:
    """Hair RGB (N, 3): auburn unless black/blond/brown weights say otherwise, then greyed."""
    w = torch.stack([f["black_hair"], f["blond_hair"], f["brown_hair"]], dim=1)  # (N, 3)
    palette = torch.tensor([HAIR_BLACK, HAIR_BLOND, HAIR_BROWN], dtype=w.dtype, device=w.device)
    total = w.sum(dim=1, keepdim=True)
    base = torch.tensor(HAIR_AUBURN, dtype=w.dtype, device=w.device)[None]
    # Weights past 1 are renormalised, so two active colours give their mixture.
    mixed = (base * (1.0 - total).clamp_min(0.0) + w @ palette) / total.clamp_min(1.0)
    silver = torch.tensor(HAIR_SILVER, dtype=w.dtype, device=w.device)[None]
    return torch.lerp(mixed, silver, GRAY_MIX * f["grayness"][:, None])


def hair_strands(f: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Hair RGB per column, (N, 3, 1, W), for canonical x (N, 1, 1, W).

    Each active colour and the grey are laid down in vertical strands with their own phase,
    so two colours (or a colour and grey) stay separately visible instead of blending into a
    third colour; with one colour and no grey the strands vanish and the hair is uniform.
    """
    w = torch.stack([f["black_hair"], f["blond_hair"], f["brown_hair"]], dim=1).reshape(-1, 3, 1, 1)
    phases = torch.tensor([0.0, 2.0, 4.0], dtype=x.dtype, device=x.device).view(1, 3, 1, 1) * (math.pi / 3.0)
    strands = 1.0 + 0.9 * torch.cos(x * (2.0 * math.pi / STRAND_PERIOD) + phases)  # (N, 3, 1, W)
    v = w * strands  # weight of each colour
    v0 = (1.0 - w.sum(dim=1, keepdim=True)).clamp_min(0.0)  # auburn's weight
    palette = torch.tensor(
        [HAIR_BLACK, HAIR_BLOND, HAIR_BROWN], dtype=x.dtype, device=x.device
    )  # (3 colours, RGB)
    mixed = (v0 * _color(HAIR_AUBURN, x) + torch.einsum("nkhw,kc->nchw", v, palette)) / (
        v0 + v.sum(dim=1, keepdim=True) + 1e-6
    )
    grey = 0.25 + 0.75 * (0.5 + 0.5 * torch.cos(x * (2.0 * math.pi / GRAY_PERIOD) + math.pi / 2))
    return torch.lerp(mixed, _color(HAIR_SILVER, x), GRAY_MIX * _col(f["grayness"]) * grey)


def skin_color(f: dict[str, torch.Tensor]) -> torch.Tensor:
    """Skin RGB (N, 3) from paleness."""
    p = f["paleness"][:, None]
    skin = torch.tensor(SKIN, dtype=p.dtype, device=p.device)[None]
    return torch.lerp(skin, torch.tensor(SKIN_PALE, dtype=p.dtype, device=p.device)[None], p)


def render(
    factors: dict[str, torch.Tensor], resolution: int = 64, supersample: int = 2, chunk_size: int = 16
) -> torch.Tensor:
    """Draw faces from factors.

    Args:
        factors: dict with every name in :data:`tlgan.toyfaces.world.FACTOR_NAMES`, each an
            (N,) tensor (extra keys are ignored). Device and dtype follow the tensors.
        resolution: output side R in pixels.
        supersample: drawing grid is ``R * supersample``; average-pooled down to R.
        chunk_size: faces drawn together; small chunks keep the drawing grid in the CPU
            cache (16 is about twice as fast as 256 at 64 px), large ones suit a GPU.

    Returns:
        (N, 3, R, R) float images in [-1, 1], differentiable in the factors.
    """
    if int(resolution) < 8 or int(supersample) < 1:
        raise TlganError(f"resolution must be >= 8 and supersample >= 1; got {resolution} and {supersample}")
    if int(chunk_size) < 1:
        raise TlganError(f"chunk_size must be >= 1; got {chunk_size}")
    f, like = _check_factors(factors)
    n, step = like.shape[0], int(chunk_size)
    chunks = [{k: v[i : i + step] for k, v in f.items()} for i in range(0, n, step)]
    draw = partial(_render_chunk, resolution=int(resolution), supersample=int(supersample))
    if like.device.type != "cpu":
        return torch.cat([draw(c) for c in chunks])
    # On CPU each chunk is drawn by one thread and the chunks are spread over the threads torch
    # may use: per-operation threading on such small tensors spends more time synchronising
    # than drawing, and stalls badly on a busy machine.
    with _one_thread_per_chunk() as workers:
        if workers == 1 or len(chunks) == 1:
            return torch.cat([draw(c) for c in chunks])
        grad = torch.is_grad_enabled()  # grad mode is per thread; carry the caller's into the pool

        def work(chunk):
            with torch.set_grad_enabled(grad):
                return draw(chunk)

        with ThreadPoolExecutor(max_workers=min(workers, len(chunks))) as pool:
            return torch.cat(list(pool.map(work, chunks)))


_THREADS_LOCK = threading.Lock()
_THREADS_DEPTH = 0
_THREADS_SAVED = 1


@contextmanager
def _one_thread_per_chunk() -> Iterator[int]:
    """Set torch's intra-op threads to 1 while rendering; yield how many it had (re-entrant)."""
    global _THREADS_DEPTH, _THREADS_SAVED
    with _THREADS_LOCK:
        if _THREADS_DEPTH == 0:
            _THREADS_SAVED = torch.get_num_threads()
            if _THREADS_SAVED != 1:
                torch.set_num_threads(1)
        _THREADS_DEPTH += 1
        workers = _THREADS_SAVED
    try:
        yield workers
    finally:
        with _THREADS_LOCK:
            _THREADS_DEPTH -= 1
            if _THREADS_DEPTH == 0 and _THREADS_SAVED != 1:
                torch.set_num_threads(_THREADS_SAVED)


def _render_chunk(f: dict[str, torch.Tensor], resolution: int, supersample: int) -> torch.Tensor:
    like = f["scale"]
    res = resolution * supersample
    n = like.shape[0]
    P = _Painter(f, res, like)

    yaw = _col(P.yaw_n(f))
    masc = _col(f["masculinity"])
    ageing = _col(world.age_to_amount(f["age"]))
    smile = _col(f["smile"])
    opening = _col(f["mouth_opening"])
    nose = _col(f["nose_size"])
    bald = _col(f["baldness"])
    hair_rgb = hair_color(f)
    brow_color = (hair_rgb * 0.55)[:, :, None, None]
    facial_hair = (hair_rgb * 0.55)[:, :, None, None]
    stache_color = (hair_rgb * 0.38)[:, :, None, None]  # darker than a beard, so it shows on one
    skin_rgb = skin_color(f)
    skin = skin_rgb[:, :, None, None]
    skin_shadow = (skin_rgb * 0.86)[:, :, None, None]
    skin_line = (skin_rgb * 0.55)[:, :, None, None]

    # Depth-dependent sideways shifts from yaw: the nose sticks out most.
    d_eye = YAW_SHIFT * 0.6 * yaw
    d_nose = YAW_SHIFT * 1.0 * yaw
    d_mouth = YAW_SHIFT * 0.75 * yaw
    d_hat = YAW_SHIFT * 0.3 * yaw

    # Background: hue / brightness nuisances.
    bg = _hsv_to_rgb(f["background_hue"], BACKGROUND_SATURATION, f["background_brightness"])
    P.canvas = bg[:, :, None, None].expand(n, 3, res, res).contiguous()

    # Back hair: long (to the shoulders) for female faces, a short rim for male ones. Baldness
    # removes everything above ear level.
    win = P.window(-0.72, 0.72, -0.75, 1.05)
    x, y = P.coords(win)
    back = P.ellipse(x, y, 0.0, 0.18 - 0.24 * masc, 0.64 - 0.09 * masc, 0.84 - 0.22 * masc)
    back = back * (1.0 - bald * P.step(0.0 - y))
    P.paint(win, back, hair_strands(f, x))

    # Shoulders and neck.
    win = P.window(-1.0, 1.0, 0.68, 1.3)
    x, y = P.coords(win)
    P.paint(win, P.ellipse(x, y, 0.0, 1.25, 0.95, 0.5), _color(SHIRT, like))
    win = P.window(-0.26, 0.26, 0.3, 0.95)
    x, y = P.coords(win)
    neck = P.step(0.18 + 0.03 * masc - x.abs()) * P.step(y - 0.3) * P.step(0.88 - y)
    P.paint(win, neck, skin_shadow)

    # Head with a jaw that widens for male faces and sags with age.
    rx_top = HEAD_RX_FEMALE + (HEAD_RX_MALE - HEAD_RX_FEMALE) * masc
    win = P.window(-0.66, 0.66, -0.12, 0.2)
    x, y = P.coords(win)
    ears = P.ellipse(x.abs(), y, rx_top + 0.012, 0.04, 0.075, 0.125)
    P.paint(win, ears, skin_shadow)

    head_win = P.window(-0.7, 0.7, -0.68, 0.72)
    x, y = P.coords(head_win)
    jaw = -0.05 + 0.24 * masc + 0.08 * ageing

    def head_rx(y):
        return rx_top * (1.0 + jaw * ((y - 0.05) / 0.55).clamp(0.0, 1.0))

    head = P.ellipse(x, y, 0.0, HEAD_CY, head_rx(y), HEAD_RY)
    P.paint(head_win, head, skin)

    # Smile: rosy raised cheeks.
    win = P.window(-0.5, 0.5, 0.08, 0.36)
    x, y = P.coords(win)
    cheeks = P.ellipse((x - d_eye).abs(), y, 0.25, 0.21, 0.075, 0.06) * (0.6 * smile)
    P.paint(win, cheeks, _color(BLUSH, like))

    # Age: nasolabial folds, bags under the eyes, forehead lines.
    win = P.window(-0.45, 0.45, 0.16, 0.44)
    x, y = P.coords(win)
    u = (x - d_nose).abs()
    t = ((y - 0.2) / 0.2).clamp(0.0, 1.0)
    fold_x = 0.1 + 0.1 * t + 0.02 * t * (1.0 - t)
    folds = P.step(0.02 - (u - fold_x).abs()) * P.step(y - 0.2) * P.step(0.4 - y)
    P.paint(win, folds * ageing, skin_line)
    win = P.window(-0.5, 0.5, -0.02, 0.12)
    x, y = P.coords(win)
    u = (x - d_eye).abs() - EYE_DX
    bags = P.step(0.015 - (y - (0.066 + 0.25 * u * u)).abs()) * P.step(0.085 - u.abs())
    # Crow's feet: two short lines fanning out from the outer eye corner, beside any glasses.
    crow = P.step(0.011 - (y - 0.1 * (u - 0.13)).abs()) + P.step(0.011 - (y - 0.03 - 0.5 * (u - 0.13)).abs())
    bags = bags + crow * P.step(u - 0.14) * P.step(0.18 - u)
    P.paint(win, bags * ageing, skin_line)
    win = P.window(-0.4, 0.4, -0.3, -0.18)
    x, y = P.coords(win)
    lines = P.step(0.01 - (y + 0.205 - 0.1 * x * x).abs()) + P.step(0.01 - (y + 0.245 - 0.1 * x * x).abs())
    lines = lines * P.step(0.22 - (x - d_eye).abs())
    P.paint(win, lines * ageing, skin_line)

    # Hair on the head: the crown (gone when bald) plus the sides (kept when bald).
    # The mask is the head grown by a little volume, so no skin rim shows at the outline.
    win = P.window(-0.72, 0.72, -0.7, 0.14)
    x, y = P.coords(win)
    hx = x / 0.45
    crown = P.step(HAIRLINE_Y - 0.06 * hx * hx - y) * (1.0 - bald)
    # Bald heads keep a wider fringe at the sides, where their hair colour stays readable.
    sides = P.step(x.abs() - SIDE_HAIR_X - 0.04 * (1.0 - masc) + 0.03 * bald) * P.step(0.1 - y)
    grown = P.ellipse(x, y, 0.0, HEAD_CY - 0.01, head_rx(y) + 0.025, HEAD_RY + 0.025)
    on_head = grown * (crown + sides - crown * sides)
    P.paint(win, on_head, hair_strands(f, x))
    # A bald scalp shines.
    win = P.window(-0.4, 0.4, -0.5, -0.28)
    x, y = P.coords(win)
    shine = P.ellipse(x, y, -0.12 + d_hat, -0.4, 0.11, 0.045) * (0.55 * bald)
    P.paint(win, shine, _color((1.0, 1.0, 1.0), like))

    # Bangs: a fringe over the forehead, from the crown band down to just above the brows.
    win = P.window(-0.6, 0.6, -0.41, -0.14)
    x, y = P.coords(win)
    edge = -0.185 + 0.02 * torch.cos(x * 40.0)
    grown = P.ellipse(x, y, 0.0, HEAD_CY - 0.01, head_rx(y) + 0.025, HEAD_RY + 0.025)
    fringe = grown * P.step(y + 0.37) * P.step(edge - y) * _col(f["bangs"])
    P.paint(win, fringe, hair_strands(f, x))

    # Eyebrows: thicker for male faces.
    win = P.window(-0.46, 0.46, -0.24, -0.08)
    x, y = P.coords(win)
    u = (x - d_eye).abs() - EYE_DX
    half = 0.014 + 0.016 * masc
    brows = P.step(half - (y - (BROW_Y + 1.6 * u * u)).abs()) * P.step(0.11 - u.abs())
    P.paint(win, brows, brow_color)

    # Eyes.
    win = P.window(-0.42, 0.42, -0.08, 0.08)
    x, y = P.coords(win)
    u = (x - d_eye).abs() - EYE_DX
    P.paint(win, P.ellipse(u, y, 0.0, EYE_Y, 0.092, 0.052 * (1.0 - 0.25 * smile)), _color(EYE_WHITE, like))
    P.paint(win, P.ellipse(u, y, 0.0, EYE_Y + 0.004, 0.04, 0.04), _color(IRIS, like))
    P.paint(win, P.ellipse(u, y, 0.0, EYE_Y + 0.004, 0.018, 0.018), _color(PUPIL, like))

    # Nose: a shaded tip with nostrils and a line down the bridge; size scales everything.
    win = P.window(-0.36, 0.36, 0.02, 0.34)
    x, y = P.coords(win)
    xn = x - d_nose
    bridge = P.step(0.012 - (xn - 0.03).abs()) * P.step(y - 0.06) * P.step(NOSE_Y - y)
    P.paint(win, bridge, skin_shadow)
    k = nose**1.6  # the Big_Nose factor 1.0 .. 1.8 gives a tip 1.0 .. 2.6 times as wide
    # A big nose grows sideways more than down, and upwards, so a mustache never hides it.
    ky = k**0.8
    cy = NOSE_Y - 0.025 * (k - 1.0)
    tip_out = P.ellipse(xn, y, 0.0, cy, 0.05 * k + 0.012, 0.04 * ky + 0.012)
    P.paint(win, tip_out, (skin_rgb * 0.6)[:, :, None, None])
    tip = P.ellipse(xn, y, 0.0, cy - 0.006, 0.05 * k, 0.04 * ky)
    P.paint(win, tip, (skin_rgb * 0.84)[:, :, None, None])
    nostrils = P.ellipse(xn.abs(), y, 0.028 * k, cy + 0.02 * ky, 0.016 * k, 0.011 * ky)
    P.paint(win, nostrils, _color((0.3, 0.14, 0.12), like))

    # The lip line rises at the corners with the smile; mouth width grows with it.
    half_width = 0.14 + 0.035 * smile

    def lip_line(x):
        r = (x - d_mouth) / half_width
        return MOUTH_Y + (0.012 * (1.0 - smile) - 0.1 * smile) * r * r, r

    # Beard: jaw and chin (reaching a little past the outline), with a hole around the mouth
    # so the lips stay visible.
    win = P.window(-0.7, 0.7, 0.0, 0.72)
    x, y = P.coords(win)
    outer = P.ellipse(x, y, 0.0, HEAD_CY + 0.025, head_rx(y) * 1.04, HEAD_RY + 0.03)
    inner_face = P.ellipse(x, y, 0.0, 0.0, 0.37, 0.35)
    ly, r = lip_line(x)
    hole = P.ellipse(r, y - ly, 0.0, -0.025, 1.22, 0.105)
    beard = outer * (1.0 - inner_face) * (1.0 - hole) * P.step(y - 0.06) * _col(f["beard_density"])
    P.paint(win, beard, facial_hair)

    # Mouth: lips (red with lipstick), the dark opening, teeth when smiling.
    win = P.window(-0.4, 0.4, 0.2, 0.56)
    x, y = P.coords(win)
    ly, r = lip_line(x)
    dy = y - ly
    gap = 0.052 * opening
    lips = P.ellipse(r, dy, 0.0, 0.0, 1.0, 0.034 + gap)
    lip_rgb = torch.lerp(
        torch.lerp(skin, _color(LIPS, like), 0.8), _color(LIPSTICK, like), _col(f["lipstick"])
    )
    P.paint(win, lips, lip_rgb)
    inside = P.ellipse(r, dy, 0.0, 0.0, 0.86, gap + 0.004) * opening.clamp(0.0, 1.0)
    P.paint(win, inside, _color(MOUTH_INSIDE, like))
    teeth = P.ellipse(r, dy, 0.0, -0.6 * gap, 0.82, 0.021) * smile
    P.paint(win, teeth, _color(TEETH, like))

    # Mustache: a band above the upper lip following its curve.
    win = P.window(-0.42, 0.42, 0.22, 0.46)
    x, y = P.coords(win)
    ly, r = lip_line(x)
    stache = P.ellipse(
        (x - d_mouth) / (half_width + 0.05), y - ly, 0.0, -0.075 - 0.5 * 0.052 * opening, 1.0, 0.042
    )
    P.paint(win, stache * _col(f["mustache"]), stache_color)

    # Eyeglasses: rings around the eyes, a bridge, arms to the ears, faintly tinted lenses.
    win = P.window(-0.68, 0.68, -0.16, 0.16)
    x, y = P.coords(win)
    u = (x - d_eye).abs() - EYE_DX
    lens = P.ellipse(u, y, 0.0, EYE_Y + 0.004, 0.128, 0.092)
    lens_in = P.ellipse(u, y, 0.0, EYE_Y + 0.004, 0.128 - 0.05, 0.092 - 0.05)
    glasses = _col(f["glasses"])
    P.paint(win, lens_in * (0.22 * glasses), _color(LENS, like))
    bridge = P.step(0.022 - (y - EYE_Y + 0.01).abs()) * P.step(0.09 - (x - d_eye).abs())
    arms = P.step(0.02 - (y - EYE_Y + 0.01).abs()) * P.step(u - 0.1) * P.step(rx_top + 0.02 - x.abs())
    frame = (lens - lens_in) + bridge + arms
    P.paint(win, frame.clamp(0.0, 1.0) * glasses, _color(FRAMES, like))

    # Hat: a small cap on the crown that leaves hairline and forehead visible.
    win = P.window(-0.6, 0.6, -0.85, -0.42)
    x, y = P.coords(win)
    hat = _col(f["hat"])
    dome = P.ellipse(x, y, d_hat, CAP_BOTTOM_Y - 0.06, 0.32, 0.2) * P.step(CAP_BOTTOM_Y - y)
    P.paint(win, dome * hat, _color(HAT, like))
    brim = P.ellipse(x, y, d_hat + 0.06 * (1 + yaw), CAP_BOTTOM_Y, 0.4, 0.04)
    P.paint(win, brim * hat, _color(HAT_BRIM, like))

    image = P.canvas
    if supersample > 1:
        image = F.avg_pool2d(image, int(supersample))
    # Light: a mild brightness gradient across the image (smooth, so applied after pooling).
    out_res = image.shape[-1]
    v = (torch.arange(out_res, dtype=like.dtype, device=like.device) + 0.5) * (2.0 / out_res) - 1.0
    ang = torch.deg2rad(f["light_angle"])
    gain = 1.0 + LIGHT_STRENGTH * (
        _col(torch.cos(ang)) * v.view(1, 1, 1, -1) + _col(torch.sin(ang)) * v.view(1, 1, -1, 1)
    )
    return (image * gain).clamp(0.0, 1.0) * 2.0 - 1.0


def render_speed(
    n: int = 2000, batch_size: int = 256, resolution: int = 64, supersample: int = 2, seed: int = 0
) -> float:
    """Faces per second of ``render(factors(z))`` for ``n`` faces in batches of ``batch_size``.

    Runs on CPU with as many drawing threads as torch's current thread count (see
    ``torch.set_num_threads``); one warm-up call is not timed.
    """
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(batch_size, world.Z_DIM, generator=gen)
    with torch.no_grad():
        render(world.factors(z[:8]), resolution, supersample)  # warm-up
        done = 0
        start = time.perf_counter()
        while done < n:
            m = min(batch_size, n - done)
            render(world.factors(z[:m]), resolution, supersample)
            done += m
        elapsed = time.perf_counter() - start
    return n / elapsed
