"""The toyfaces world: 17 CelebA attributes as fixed linear functions of a 512-d latent.

A latent ``z`` is a standard-normal vector in R^512. A fixed orthonormal basis
``e_0 .. e_511`` (the Q factor of the float64 QR decomposition, ``torch.linalg.qr``, of a
512x512 standard-normal matrix drawn by ``numpy.random.default_rng(BASIS_SEED)``, with
BASIS_SEED = 20170512 and column signs fixed so that R has a positive diagonal) gives the
*base directions*. Each attribute ``a`` has a unit direction
``w_a`` (a fixed combination of base directions, table below) and a bias ``b_a``; its
*latent score* is ``s_a = w_a . z + b_a`` and its label is ``s_a > 0``. Since ``z`` is
standard normal, ``s_a ~ N(b_a, 1)`` and ``b_a = Phi^-1(p_a)`` gives the frequency ``p_a``.
The true axis of attribute ``a`` is ``w_a`` exactly.

Directions (before normalisation to unit length; ``e_k`` are base directions):

==================== ================================== =========
attribute            direction                          frequency
==================== ================================== =========
Male                 e0                                 0.42
Young                e1                                 0.75
Smiling              e2                                 0.48
Eyeglasses           e3                                 0.10
Mustache             0.60 e0 + 0.50 e5 + 0.62 e4        0.10
Beard                0.85 e0 + 0.527 e5                 0.15
Bald                 0.65 e0 - 0.60 e1 + 0.47 e6        0.08
Bangs                e7                                 0.15
Black_Hair           cos(90) e8 + sin(90) e9            0.22
Blond_Hair           cos(210) e8 + sin(210) e9          0.16
Brown_Hair           cos(330) e8 + sin(330) e9          0.20
Gray_Hair            -0.60 e1 + 0.80 e10                0.10
Wearing_Lipstick     -0.85 e0 + 0.527 e11               0.45
Wearing_Hat          e12                                0.08
Mouth_Slightly_Open  e13                                0.48
Pale_Skin            e14                                0.10
Big_Nose             e15                                0.20
==================== ================================== =========

The resulting overlaps (cosines between unit directions; all other pairs are 0):

- Beard . Male = 0.850, Mustache . Male = 0.602, Mustache . Beard = 0.776
- Wearing_Lipstick . Male = -0.850, Wearing_Lipstick . Beard = -0.722,
  Wearing_Lipstick . Mustache = -0.511
- Bald . Male = 0.649, Bald . Young = -0.599, Bald . Beard = 0.551,
  Bald . Mustache = 0.390, Bald . Wearing_Lipstick = -0.551, Bald . Gray_Hair = 0.359
- Gray_Hair . Young = -0.600
- Black_Hair . Blond_Hair = Black_Hair . Brown_Hair = Blond_Hair . Brown_Hair = -0.500
  (three directions 120 degrees apart in one plane, each with a negative bias: on 400k
  latents about 2% of faces have two hair colours, 44% none, which renders as auburn).

Consequences on labels (Monte Carlo, 400k latents): P(Beard | female) ~ 0.009 against
P(Beard | male) ~ 0.35; P(Male | Wearing_Lipstick) ~ 0.08; P(Male and not Young | Bald) ~ 0.6;
P(Gray_Hair | not Young) ~ 0.27 against P(Gray_Hair | Young) ~ 0.04.

Nuisance factors use base directions e16 .. e24, which no attribute uses (see
:data:`NUISANCES`); e25 .. e511 do nothing. Each attribute also drives one continuous
*factor* (:data:`FACTOR_OF`), a monotone function of its score that the renderer draws.
"""

from __future__ import annotations

import math
from functools import lru_cache
from statistics import NormalDist

import numpy as np
import torch

from tlgan.errors import TlganError

Z_DIM = 512
BASIS_SEED = 20_170_512

ATTRIBUTES: tuple[str, ...] = (
    "Male",
    "Young",
    "Smiling",
    "Eyeglasses",
    "Mustache",
    "Beard",
    "Bald",
    "Bangs",
    "Black_Hair",
    "Blond_Hair",
    "Brown_Hair",
    "Gray_Hair",
    "Wearing_Lipstick",
    "Wearing_Hat",
    "Mouth_Slightly_Open",
    "Pale_Skin",
    "Big_Nose",
)


def _hair(angle_deg: float) -> dict[int, float]:
    rad = math.radians(angle_deg)
    return {8: math.cos(rad), 9: math.sin(rad)}


# attribute -> ({base index: weight}, frequency). Weights are normalised to a unit vector.
_DESIGN: dict[str, tuple[dict[int, float], float]] = {
    "Male": ({0: 1.0}, 0.42),
    "Young": ({1: 1.0}, 0.75),
    "Smiling": ({2: 1.0}, 0.48),
    "Eyeglasses": ({3: 1.0}, 0.10),
    "Mustache": ({0: 0.60, 5: 0.50, 4: 0.62}, 0.10),
    "Beard": ({0: 0.85, 5: 0.527}, 0.15),
    "Bald": ({0: 0.65, 1: -0.60, 6: 0.47}, 0.08),
    "Bangs": ({7: 1.0}, 0.15),
    "Black_Hair": (_hair(90.0), 0.22),
    "Blond_Hair": (_hair(210.0), 0.16),
    "Brown_Hair": (_hair(330.0), 0.20),
    "Gray_Hair": ({1: -0.60, 10: 0.80}, 0.10),
    "Wearing_Lipstick": ({0: -0.85, 11: 0.527}, 0.45),
    "Wearing_Hat": ({12: 1.0}, 0.08),
    "Mouth_Slightly_Open": ({13: 1.0}, 0.48),
    "Pale_Skin": ({14: 1.0}, 0.10),
    "Big_Nose": ({15: 1.0}, 0.20),
}

#: Attribute -> the name of its continuous factor in :func:`factors`.
FACTOR_OF: dict[str, str] = {
    "Male": "masculinity",  # 0..1
    "Young": "age",  # years, decreasing in the Young score; 40 at the threshold
    "Smiling": "smile",  # 0..1
    "Eyeglasses": "glasses",  # frame opacity 0..1
    "Mustache": "mustache",  # density 0..1
    "Beard": "beard_density",  # 0..1
    "Bald": "baldness",  # 0..1 (fraction of crown hair gone)
    "Bangs": "bangs",  # fringe opacity 0..1
    "Black_Hair": "black_hair",  # hair-colour weight 0..1
    "Blond_Hair": "blond_hair",
    "Brown_Hair": "brown_hair",
    "Gray_Hair": "grayness",  # 0..1
    "Wearing_Lipstick": "lipstick",  # 0..1
    "Wearing_Hat": "hat",  # 0..1
    "Mouth_Slightly_Open": "mouth_opening",  # 0..1
    "Pale_Skin": "paleness",  # 0..1
    "Big_Nose": "nose_size",  # relative nose size, 1.0 .. 1.8; 1.4 at the threshold
}

#: Steepness k of ``amount = sigmoid(k * s)`` per attribute: object-like cues are nearly
#: binary; graded ones (age, smile, masculinity, mouth) follow the score more gently.
STEEPNESS: dict[str, float] = {
    "Male": 8.0,
    "Young": 8.0,
    "Smiling": 8.0,
    "Eyeglasses": 16.0,
    "Mustache": 16.0,
    "Beard": 16.0,
    "Bald": 12.0,
    "Bangs": 16.0,
    "Black_Hair": 12.0,
    "Blond_Hair": 12.0,
    "Brown_Hair": 12.0,
    "Gray_Hair": 12.0,
    "Wearing_Lipstick": 12.0,
    "Wearing_Hat": 16.0,
    "Mouth_Slightly_Open": 8.0,
    "Pale_Skin": 12.0,
    "Big_Nose": 12.0,
}

AGE_AT_THRESHOLD = 40.0  # years
AGE_SPAN = 22.0  # age = 40 - 22 tanh(s / 1.5): about 18..62 years
NOSE_MIN, NOSE_SPAN = 1.0, 0.8

#: Nuisance factors: name -> (base indices, meaning).
NUISANCE_BASES: dict[str, tuple[tuple[int, ...], str]] = {
    "yaw": ((16,), "head turn in degrees, about -30..30; positive turns the face to image right"),
    "light_angle": (
        (17, 18),
        "direction the light comes from, degrees in the image plane (0 = from the right)",
    ),
    "background_hue": ((19, 20), "background hue in [0, 1)"),
    "background_brightness": ((21,), "background value (HSV) in about 0.35..0.85"),
    "scale": ((22,), "face size relative to the canonical face, 0.92..1.08"),
    "shift_x": ((23,), "horizontal offset in pixels at 64 px, -3..3"),
    "shift_y": ((24,), "vertical offset in pixels at 64 px, -3..3"),
}
NUISANCES: tuple[str, ...] = tuple(NUISANCE_BASES)
FIRST_UNUSED_BASE = 25

FACTOR_NAMES: tuple[str, ...] = tuple(FACTOR_OF[a] for a in ATTRIBUTES) + NUISANCES


@lru_cache(maxsize=1)
def _basis64() -> np.ndarray:
    gaussian = np.random.default_rng(BASIS_SEED).standard_normal((Z_DIM, Z_DIM))
    # One thread: multi-threaded LAPACK can spin for seconds on a busy machine for a matrix
    # this small.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        q, r = torch.linalg.qr(torch.from_numpy(gaussian))
    finally:
        torch.set_num_threads(threads)
    q, r = q.numpy(), r.numpy()
    return q * np.sign(np.diag(r))[None, :]  # columns are the base directions e_k


def base_directions() -> torch.Tensor:
    """The fixed orthonormal basis, (512, 512) float32; row k is base direction e_k."""
    return torch.from_numpy(_basis64().T.astype(np.float32))


@lru_cache(maxsize=1)
def _directions64() -> tuple[np.ndarray, np.ndarray]:
    basis = _basis64()
    rows, biases = [], []
    for name in ATTRIBUTES:
        weights, freq = _DESIGN[name]
        vec = sum(w * basis[:, k] for k, w in weights.items())
        rows.append(vec / np.linalg.norm(vec))
        biases.append(_normal_ppf(freq))
    return np.stack(rows), np.asarray(biases)


def _normal_ppf(p: float) -> float:
    return NormalDist().inv_cdf(p)


def true_directions() -> torch.Tensor:
    """Unit attribute directions w_a, (17, 512) float32, rows in :data:`ATTRIBUTES` order."""
    return torch.from_numpy(_directions64()[0].astype(np.float32))


def biases() -> torch.Tensor:
    """Attribute biases b_a, (17,) float32: b_a = Phi^-1(frequency of a)."""
    return torch.from_numpy(_directions64()[1].astype(np.float32))


def frequencies() -> dict[str, float]:
    """The designed frequency of each attribute (the probability that its label is True)."""
    return {name: _DESIGN[name][1] for name in ATTRIBUTES}


def _check_z(z: torch.Tensor) -> torch.Tensor:
    if not isinstance(z, torch.Tensor):
        z = torch.as_tensor(np.asarray(z, dtype=np.float32))
    if z.ndim == 1:
        z = z[None]
    if z.ndim != 2 or z.shape[1] != Z_DIM:
        raise TlganError(f"toyfaces latents must have shape (N, {Z_DIM}); got {tuple(z.shape)}")
    return z


def _out_dtype(z: torch.Tensor) -> torch.dtype:
    return z.dtype if z.is_floating_point() else torch.float32


def _project64(z: torch.Tensor, matrix64: np.ndarray) -> torch.Tensor:
    """z (N, 512) @ matrix.T in float64 (differentiable in z).

    The factors are computed in float64 and rounded to float32 only at the end, so each
    face's factors are the same whatever the batch it is computed in.
    """
    mat = torch.from_numpy(matrix64).to(device=z.device)
    return z.to(torch.float64) @ mat.T


def _scores64(z: torch.Tensor) -> torch.Tensor:
    w, b = _directions64()
    return _project64(z, w) + torch.from_numpy(b).to(z.device)


def latent_scores(z: torch.Tensor) -> torch.Tensor:
    """Latent scores s = z W^T + b, (N, 17) in the latent's float dtype (differentiable in z)."""
    z = _check_z(z)
    return _scores64(z).to(_out_dtype(z))


def labels(z: torch.Tensor) -> torch.Tensor:
    """Binary labels, (N, 17) bool: ``latent_scores(z) > 0``."""
    return latent_scores(z) > 0


def factors(z: torch.Tensor) -> dict[str, torch.Tensor]:
    """All factors the renderer needs, each (N,): attribute amounts then nuisances.

    Keys are :data:`FACTOR_NAMES`. Attribute amounts are ``sigmoid(k_a s_a)`` (k_a in
    :data:`STEEPNESS`) except ``age`` (years, ``40 - 22 tanh(s / 1.5)``) and ``nose_size``
    (``1 + 0.8 sigmoid(k s)``). Nuisances are described in :data:`NUISANCE_BASES`. Every
    factor is a smooth function of z (``background_hue`` and ``light_angle`` are angles of a
    2-d projection, smooth away from its origin). Differentiable in z.
    """
    z = _check_z(z)
    scores = _scores64(z)
    out: dict[str, torch.Tensor] = {}
    for j, name in enumerate(ATTRIBUTES):
        s = scores[:, j]
        key = FACTOR_OF[name]
        if name == "Young":
            out[key] = AGE_AT_THRESHOLD - AGE_SPAN * torch.tanh(s / 1.5)
        elif name == "Big_Nose":
            out[key] = NOSE_MIN + NOSE_SPAN * torch.sigmoid(STEEPNESS[name] * s)
        else:
            out[key] = torch.sigmoid(STEEPNESS[name] * s)
    t = _project64(z, _basis64()[:, 16:FIRST_UNUSED_BASE].T.copy())
    out["yaw"] = 30.0 * torch.tanh(t[:, 0] / 1.5)
    out["light_angle"] = torch.rad2deg(torch.atan2(t[:, 2], t[:, 1]))
    out["background_hue"] = torch.remainder(torch.atan2(t[:, 4], t[:, 3]) / (2 * math.pi), 1.0)
    out["background_brightness"] = 0.6 + 0.25 * torch.tanh(t[:, 5] / 1.5)
    out["scale"] = 1.0 + 0.08 * torch.tanh(t[:, 6] / 1.5)
    out["shift_x"] = 3.0 * torch.tanh(t[:, 7] / 1.5)
    out["shift_y"] = 3.0 * torch.tanh(t[:, 8] / 1.5)
    dtype = _out_dtype(z)
    return {k: v.to(dtype) for k, v in out.items()}


def age_to_amount(age: torch.Tensor) -> torch.Tensor:
    """Visible ageing 0..1 from age in years; 0.5 at the Young threshold (40 years).

    Inverse of the age map, then the Young steepness: ``sigmoid(-k s)`` with
    ``s = 1.5 atanh((40 - age) / 22)``, so old faces (negative Young score) show lines.
    """
    ratio = ((AGE_AT_THRESHOLD - age) / AGE_SPAN).clamp(-0.999999, 0.999999)
    return torch.sigmoid(-STEEPNESS["Young"] * 1.5 * torch.atanh(ratio))


def nose_to_amount(nose_size: torch.Tensor) -> torch.Tensor:
    """0..1 from the relative nose size; 0.5 at the Big_Nose threshold."""
    return ((nose_size - NOSE_MIN) / NOSE_SPAN).clamp(0.0, 1.0)


#: Registered generators that draw the face the world assigns to z: the renderer, and the GAN
#: distilled from it. For them the world's true directions are true directions of the generator.
WORLD_LATENT_GENERATORS = ("toyfaces-gan", "toyfaces-render")


def shares_world_latents(generator) -> bool:
    """Whether ``generator`` draws the world's face of each z (see :data:`WORLD_LATENT_GENERATORS`)."""
    return getattr(generator, "z_dim", None) == Z_DIM and generator.name in WORLD_LATENT_GENERATORS
