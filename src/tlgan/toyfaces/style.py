"""``toyfaces-style``: the toyfaces world as a style-based generator, with the truth in z, w and wp.

Spaces, as in StyleGAN:

- ``z`` (N, 512), standard normal: the input of the fixed mapping network
  (:class:`~tlgan.toyfaces.mapping.MappingNetwork`: pixel norm, 8 seeded FC layers with leaky
  ReLU, a whitening output layer). The attributes are **non-linear** functions of z: the best
  linear function of z explains only about 30 % of an attribute's score variance
  (:func:`tlgan.toyfaces.style_eval.linear_z_quality`). ``true_axes(space="z")`` gives that best
  linear axis (least squares of the score on z), method ``"truth-linear"``, not an exact truth.
- ``w`` (N, 512): the world's latent is ``u = w - w_avg`` and every attribute score
  ``s_a = w_a . u + b_a`` is **affine in w**, so ``true_axes(space="w")`` is exact: the world's
  directions ``w_a`` (:func:`tlgan.toyfaces.world.true_directions`).
- ``wp`` (N, 10, 512): one w per synthesis layer. The drawn parts come in three groups, coarse
  to fine (StyleGAN's coarse / middle / fine styles at 64 px):

  ========= ======= =====================================================================
  group     layers  factors (and so attributes)
  ========= ======= =====================================================================
  coarse    0-3     head shape (Male), hair shape (Bald, Bangs), hat; pose: yaw, scale, shift
  middle    4-7     age lines (Young), eyes and glasses, mouth (Smiling, open), nose, mustache, beard
  fine      8-9     hair colours (Black/Blond/Brown/Gray), lipstick, skin (Pale_Skin); light,
                    background
  ========= ======= =====================================================================

  Each group's factors are :func:`tlgan.toyfaces.world.factors` of the mean of its layers' w
  (minus ``w_avg``). So an attribute's true layer range is its group's (:data:`ATTRIBUTE_LAYERS`),
  style mixing has an exact answer, and editing one layer of a group moves its scores by
  1 / (layers in the group) of a whole-group edit. The world's directions overlap (Male with
  Beard, Mustache, Wearing_Lipstick and Bald), so Male's axis applied to the middle and fine
  layers still grows beards and removes lipstick; an axis projected off the other groups'
  attributes' axes stays in its own layers (BENCHMARKS.md, "Layer ranges in wp").

Images come from the differentiable renderer (:func:`tlgan.toyfaces.render.render`), (N, 3, 64, 64)
in [-1, 1]: sharp, and invertible by gradients. Truncation works as StyleGAN2's:
``configure(truncation_psi=0.7, truncation_cutoff=4)`` pulls w (or wp's first 4 layers)
toward ``w_avg``. There is no noise: ``noise_maps()`` is empty.

``toyfaces-style-aniso`` (``ToyfacesStyle(whiten=False)``) draws the same face for the same z but
leaves the mapping's whitening output layer out: its w is the 8th layer's strongly anisotropic
output h (covariance eigenvalues 0.004..2.6, like a trained StyleGAN's w), the synthesis reads
``u = R (w - w_avg)``, and the true w axis of attribute a is the normal ``R^T w_a``, normalised.
It measures how the finders cope with an anisotropic w.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import torch

from tlgan.axes.feature_axes import FeatureAxes
from tlgan.errors import TlganError
from tlgan.models.style_based import StyleBasedGenerator
from tlgan.registry import unknown_name_message
from tlgan.toyfaces import mapping, world
from tlgan.toyfaces.render import render

NUM_WS = 10
ANISO_NAME = "toyfaces-style-aniso"

#: Layer groups, coarse to fine: name -> (first layer, one past the last).
GROUPS: dict[str, tuple[int, int]] = {"coarse": (0, 4), "middle": (4, 8), "fine": (8, 10)}

#: Factor (:data:`tlgan.toyfaces.world.FACTOR_NAMES`) -> the group whose w draws it.
FACTOR_GROUP: dict[str, str] = {
    **dict.fromkeys(
        ("masculinity", "baldness", "bangs", "hat", "yaw", "scale", "shift_x", "shift_y"), "coarse"
    ),
    **dict.fromkeys(
        ("age", "smile", "glasses", "mustache", "beard_density", "mouth_opening", "nose_size"), "middle"
    ),
    **dict.fromkeys(
        (
            "black_hair",
            "blond_hair",
            "brown_hair",
            "grayness",
            "lipstick",
            "paleness",
            "light_angle",
            "background_hue",
            "background_brightness",
        ),
        "fine",
    ),
}

#: Attribute -> its true layer range in wp, (first, one past the last).
ATTRIBUTE_LAYERS: dict[str, tuple[int, int]] = {
    a: GROUPS[FACTOR_GROUP[world.FACTOR_OF[a]]] for a in world.ATTRIBUTES
}

#: Samples and seed of the least-squares fit behind ``true_axes(space="z")``.
Z_TRUTH_SAMPLES = 16_384
Z_TRUTH_SEED = 20_191_214


def attribute_layers(attribute: str) -> list[int]:
    """The wp layers that draw ``attribute`` (its group's), e.g. ``[0, 1, 2, 3]`` for Male."""
    if attribute not in ATTRIBUTE_LAYERS:
        raise TlganError(unknown_name_message("toyfaces attribute", attribute, list(world.ATTRIBUTES)))
    return list(range(*ATTRIBUTE_LAYERS[attribute]))


class ToyfacesSynthesis(torch.nn.Module):
    """wp (N, 10, 512) -> images (N, 3, R, R) in [-1, 1], through the world's factors (see module docs)."""

    def __init__(
        self,
        w_avg: torch.Tensor,
        img_resolution: int = 64,
        supersample: int = 2,
        readout: torch.Tensor | None = None,
    ):
        super().__init__()
        self.img_resolution, self.supersample, self.num_ws = int(img_resolution), int(supersample), NUM_WS
        self.register_buffer("w_avg", w_avg.clone(), persistent=False)
        self.register_buffer("readout", None if readout is None else readout.clone(), persistent=False)

    def group_latents(self, wp: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each group's world latent ``u = mean of its layers' w - w_avg`` (times the read-out R of an
        anisotropic w), (N, 512)."""
        assert wp.ndim == 3 and wp.shape[1] == self.num_ws, (
            f"wp must be (N, {self.num_ws}, 512), got {tuple(wp.shape)}"
        )
        w_avg = self.w_avg.to(wp.dtype)
        u = {g: wp[:, a:b].mean(dim=1) - w_avg for g, (a, b) in GROUPS.items()}
        if self.readout is not None:
            u = {g: x @ self.readout.to(x.dtype).T for g, x in u.items()}
        return u

    def factors(self, wp: torch.Tensor) -> dict[str, torch.Tensor]:
        """The renderer's factors, each (N,), every one from its group's latent."""
        per_group = {g: world.factors(u) for g, u in self.group_latents(wp).items()}
        return {k: per_group[FACTOR_GROUP[k]][k] for k in world.FACTOR_NAMES}

    def forward(self, wp: torch.Tensor, noise_mode: str = "const") -> torch.Tensor:
        return render(self.factors(wp), resolution=self.img_resolution, supersample=self.supersample)


class ToyfacesStyle(StyleBasedGenerator):
    """The style-based toyfaces generator: z (N, 512) -> w (N, 512) -> wp (N, 10, 512) -> (N, 3, 64, 64).

    See the module docs for the spaces and the truth in each. No trained weights: the mapping
    network is drawn from seeds (:mod:`tlgan.toyfaces.mapping`); its output layer is read from
    a 1 MB safetensors file shipped with tlgan.
    """

    name = "toyfaces-style"
    family = "toyfaces-style"
    z_dim = mapping.Z_DIM
    w_dim = mapping.W_DIM
    num_ws = NUM_WS
    img_resolution = 64

    def __init__(
        self,
        img_resolution: int = 64,
        supersample: int = 2,
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
        whiten: bool = True,
    ):
        super().__init__()
        self.img_resolution = int(img_resolution)
        self.whiten = bool(whiten)
        if not self.whiten:
            self.name = ANISO_NAME
        self.mapping = mapping.MappingNetwork(whiten=self.whiten)
        readout = None if self.whiten else self.mapping.readout
        self.synthesis = ToyfacesSynthesis(self.mapping.w_avg, self.img_resolution, supersample, readout)
        self._init_style_options(truncation_psi, truncation_cutoff)

    @property
    def w_avg(self) -> torch.Tensor:
        return self.mapping.w_avg

    @property
    def attributes(self) -> tuple:
        return world.ATTRIBUTES

    def noise_maps(self) -> dict:
        """Noise maps to optimise in inversion: none (the renderer draws no noise)."""
        return {}

    def synthesize_raw(self, wp: torch.Tensor, noise: dict | None = None) -> torch.Tensor:
        """Images (N, 3, 64, 64) from wp (N, 10, 512), unclamped (the renderer already stays in [-1, 1]).

        Differentiable in wp. ``noise`` must be empty: this generator has no noise maps.
        """
        if noise:
            raise TlganError(
                f"generator {self.name!r} has no noise maps; got {', '.join(sorted(noise))} (leave noise unset)"
            )
        wp = self.check_latents(wp, "wp")
        return self.synthesis(wp.to(self.device))

    def _wp(self, latents: torch.Tensor, space: str) -> torch.Tensor:
        return self.map_latents(self.check_latents(latents, space), space, "wp")

    def factors(self, latents: torch.Tensor, space: str = "z") -> dict[str, torch.Tensor]:
        """The factors the renderer draws for ``latents`` of ``space`` (each (N,); see world.factors)."""
        return self.synthesis.factors(self._wp(latents, space))

    def latent_scores(self, latents: torch.Tensor, space: str = "z") -> torch.Tensor:
        """Ground-truth attribute scores (N, 17) (label = score > 0), each from its own layer group."""
        u = self.synthesis.group_latents(self._wp(latents, space))
        scores = {g: world.latent_scores(x) for g, x in u.items()}
        cols = [scores[FACTOR_GROUP[world.FACTOR_OF[a]]][:, j] for j, a in enumerate(world.ATTRIBUTES)]
        return torch.stack(cols, dim=1)

    def labels(self, latents: torch.Tensor, space: str = "z") -> torch.Tensor:
        """Ground-truth labels (N, 17) bool, columns in :data:`tlgan.toyfaces.world.ATTRIBUTES` order."""
        return self.latent_scores(latents, space) > 0

    def true_axes(self, attributes: Sequence[str] | None = None, space: str = "z") -> FeatureAxes:
        """The attribute axes of ``space``, rows in the order of ``attributes`` (all by default).

        ``w``: exact, the world's directions (method ``"truth"``). ``wp``: the same w directions
        (an axis in wp is a w direction applied to chosen layers); ``info["layers"]`` gives each
        attribute's true layer range [first, one past the last]. ``z``: the least-squares linear
        axis of each score on z (method ``"truth-linear"``; :data:`Z_TRUTH_SAMPLES` samples),
        with its R^2 in ``info["r2"]``: the attributes are non-linear in z, so no exact axis exists.
        Raises TlganError for an unknown attribute or space.
        """
        self.check_space(space)
        names = list(world.ATTRIBUTES) if attributes is None else list(attributes)
        for name in names:
            if name not in world.ATTRIBUTES:
                raise TlganError(unknown_name_message("toyfaces attribute", name, list(world.ATTRIBUTES)))
        rows = [world.ATTRIBUTES.index(a) for a in names]
        info = {
            "mapping_seed": mapping.MAPPING_SEED,
            "calibration_seed": mapping.CALIBRATION_SEED,
            "basis_seed": world.BASIS_SEED,
        }
        if space == "z":
            directions, r2 = _z_truth()
            info.update(
                {
                    "r2": {a: float(r2[i]) for a, i in zip(names, rows, strict=True)},
                    "samples": Z_TRUTH_SAMPLES,
                }
            )
            return FeatureAxes(
                torch.from_numpy(directions[rows].astype(np.float32)),
                names,
                space="z",
                generator=self.name,
                method="truth-linear",
                info=info,
            )
        bias = world.biases()
        info["bias"] = {a: float(bias[i]) for a, i in zip(names, rows, strict=True)}
        info["layers"] = {a: list(ATTRIBUTE_LAYERS[a]) for a in names}
        directions = world.true_directions()[rows]
        if not self.whiten:  # s_a = w_a . R (w - w_avg) + b_a: the normal is R^T w_a
            normals = world._directions64()[0][rows] @ mapping.stored_calibration()[1].astype(np.float64)
            directions = torch.from_numpy(
                (normals / np.linalg.norm(normals, axis=1, keepdims=True)).astype(np.float32)
            )
        return FeatureAxes(directions, names, space="w", generator=self.name, method="truth", info=info)


@lru_cache(maxsize=1)
def _z_truth() -> tuple[np.ndarray, np.ndarray]:
    """(unit least-squares axes (17, 512), R^2 (17,)) of the world scores on z, float64."""
    z = np.random.default_rng(Z_TRUTH_SEED).standard_normal((Z_TRUTH_SAMPLES, mapping.Z_DIM))
    w_avg, readout = mapping.stored_calibration()
    h = mapping.map64(z)
    u = (h - w_avg.astype(np.float64)) @ readout.astype(np.float64).T
    directions, bias = world._directions64()
    scores = u @ directions.T + bias
    design = np.concatenate([z, np.ones((len(z), 1))], axis=1)
    coef, *_ = np.linalg.lstsq(design, scores, rcond=None)
    residual = scores - design @ coef
    r2 = 1.0 - residual.var(axis=0) / scores.var(axis=0)
    axes = coef[:-1].T
    return axes / np.linalg.norm(axes, axis=1, keepdims=True), r2
