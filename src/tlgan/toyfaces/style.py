"""``toyfaces-style``: the toyfaces world as a style-based generator, with the truth in z, w and wp.

Spaces, as in StyleGAN:

- ``z`` (N, 512), standard normal: the input of the fixed mapping network
  (:class:`~tlgan.toyfaces.mapping.MappingNetwork`: pixel norm, 8 seeded FC layers with leaky
  ReLU, a whitening output layer). The attributes are **non-linear** functions of z: the best
  linear function of z explains only about 30 % of an attribute's score variance
  (:func:`tlgan.toyfaces.style_eval.linear_z_quality`). ``true_axes(space="z")`` gives the
  **average gradient** of each true score, ``E[grad_z s_a(z)]``, normalised (method
  ``"truth-average-gradient"``): the direction in which moving z raises the attribute most on
  average. By Stein's lemma it equals ``E[z s_a(z)]`` for standard-normal z, which is also the
  population least-squares coefficient of s_a on z (Cov(z) = I), so it is the best linear axis
  too. It is estimated once by averaging autograd gradients over :data:`Z_TRUTH_SAMPLES` =
  16,384 latents of their own seed (:data:`Z_TRUTH_SEED`, independent of any fitting sample;
  :func:`average_gradients`) and stored in :data:`Z_TRUTH_FILE`. The per-face gradients vary
  little, so the spread of independent estimates puts it within a cosine of about 0.9992 of the
  exact expectation; Stein's form ``E[z s]`` on 400,000 other latents without autograd
  (:func:`stein_estimate`, itself within about 0.998) agrees with it.
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

  Each base direction ``e_k`` of the world (:mod:`tlgan.toyfaces.world`) belongs to the group
  that draws its factor (:data:`BASE_GROUP`): e0 (masculinity) to coarse, e5 (the beard's own
  part) to middle, e11 (the lipstick's own part) to fine, and so on. Every group's latent is
  ``u_g = mean of its layers' w - w_avg``; the world latent the factors are drawn from takes each
  base coordinate from its own group, ``u = sum_g P_g u_g`` (``P_g`` the projection onto the
  group's base directions), and :func:`tlgan.toyfaces.world.factors` draws the face from it. An
  attribute whose direction combines bases of several groups reads all of them: Beard
  (0.85 e0 + 0.53 e5) reads masculinity from the coarse layers and its own part from the middle
  ones, so a beard grows only where the coarse layers make a man, as in a StyleGAN whose middle
  layers draw a beard on the head its coarse layers chose. So:

  ===================== ============ ==================================================
  attribute             true layers  why
  ===================== ============ ==================================================
  Male, Bangs, Hat      0-3          their bases are all coarse
  Young, Smiling,       4-7          all middle
  Eyeglasses, Mouth_
  Slightly_Open,
  Big_Nose
  Mustache, Beard       0-7          e0 (coarse) and their own middle bases
  Bald                  0-7          e0 and e6 (coarse), e1 (age, middle)
  Gray_Hair             4-9          e1 (middle) and e10 (fine)
  Wearing_Lipstick      0-3, 8-9     e0 (coarse) and e11 (fine)
  hair colours, Pale    8-9          all fine
  ===================== ============ ==================================================

  (:data:`ATTRIBUTE_LAYERS`). Editing any direction on layers outside an attribute's set
  changes nothing that attribute's factor reads, so its layer set is exact for every axis,
  style mixing has an exact answer, and editing one layer of a group moves the group's
  coordinates by 1 / (layers in the group) of a whole-group edit. When all layers hold the same
  w, ``u = w - w_avg`` and every statement about w above holds.

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

#: Factor (:data:`tlgan.toyfaces.world.FACTOR_NAMES`) -> the group that draws its part (an
#: attribute's factor may also read other groups' bases: :data:`ATTRIBUTE_GROUPS`).
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

#: Base direction index (:mod:`tlgan.toyfaces.world`) -> the group whose layers it is read from:
#: the group drawing the factor that the base belongs to (e5, shared by Beard and Mustache, is the
#: beard's own part). Bases 25..511 draw nothing; they are read from the coarse layers.
BASE_GROUP: dict[int, str] = {
    **dict.fromkeys((0, 6, 7, 12), "coarse"),
    **dict.fromkeys((1, 2, 3, 4, 5, 13, 15), "middle"),
    **dict.fromkeys((8, 9, 10, 11, 14), "fine"),
    **{k: FACTOR_GROUP[name] for name, (bases, _) in world.NUISANCE_BASES.items() for k in bases},
}


def _attribute_groups(attribute: str) -> tuple[str, ...]:
    bases = world._DESIGN[attribute][0]
    return tuple(g for g in GROUPS if any(BASE_GROUP[k] == g for k in bases))


#: Attribute -> the layer groups its score reads, coarse to fine.
ATTRIBUTE_GROUPS: dict[str, tuple[str, ...]] = {a: _attribute_groups(a) for a in world.ATTRIBUTES}

#: Attribute -> its true wp layers (sorted layer indices): the layers of the groups it reads.
ATTRIBUTE_LAYERS: dict[str, tuple[int, ...]] = {
    a: tuple(k for g in groups for k in range(*GROUPS[g])) for a, groups in ATTRIBUTE_GROUPS.items()
}

#: Latents and seed of the average-gradient estimate behind ``true_axes(space="z")``.
Z_TRUTH_SAMPLES = 16_384
Z_TRUTH_SEED = 20_191_214
Z_TRUTH_FILE = mapping.CALIBRATION_FILE.with_name("z_truth.safetensors")


def attribute_layers(attribute: str) -> list[int]:
    """The wp layers ``attribute``'s score reads, e.g. ``[0, 1, 2, 3]`` for Male, ``[0, ..., 7]`` for Beard."""
    if attribute not in ATTRIBUTE_LAYERS:
        raise TlganError(unknown_name_message("toyfaces attribute", attribute, list(world.ATTRIBUTES)))
    return list(ATTRIBUTE_LAYERS[attribute])


@lru_cache(maxsize=1)
def _group_bases() -> dict[str, np.ndarray]:
    """Group -> its base directions as columns, (512, K_g) float64; together they are the whole basis."""
    basis = world._basis64()
    return {
        g: basis[:, [k for k in range(world.Z_DIM) if BASE_GROUP.get(k, "coarse") == g]].copy()
        for g in GROUPS
    }


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

    def world_latent(self, wp: torch.Tensor) -> torch.Tensor:
        """The world latent (N, 512) the face is drawn from: each base coordinate from its own group.

        ``sum_g B_g B_g^T u_g`` in float64 (``B_g`` the group's base directions), returned in
        wp's dtype; ``w - w_avg`` (times R) when all layers hold the same w. Differentiable in wp.
        """
        bases = _group_bases()
        u = 0.0
        for g, x in self.group_latents(wp).items():
            b = torch.from_numpy(bases[g]).to(x.device)
            u = u + (x.to(torch.float64) @ b) @ b.T
        return u.to(wp.dtype)

    def factors(self, wp: torch.Tensor) -> dict[str, torch.Tensor]:
        """The renderer's factors, each (N,), from :meth:`world_latent`."""
        return world.factors(self.world_latent(wp))

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
        """Ground-truth attribute scores (N, 17) (label = score > 0), each read from its own layers."""
        return world.latent_scores(self.synthesis.world_latent(self._wp(latents, space)))

    def labels(self, latents: torch.Tensor, space: str = "z") -> torch.Tensor:
        """Ground-truth labels (N, 17) bool, columns in :data:`tlgan.toyfaces.world.ATTRIBUTES` order."""
        return self.latent_scores(latents, space) > 0

    def true_axes(self, attributes: Sequence[str] | None = None, space: str = "z") -> FeatureAxes:
        """The attribute axes of ``space``, rows in the order of ``attributes`` (all by default).

        ``w``: exact, the world's directions (method ``"truth"``). ``wp``: the same w directions
        (an axis in wp is a w direction applied to chosen layers); ``info["layers"]`` gives each
        attribute's true wp layers (a sorted list of layer indices, :data:`ATTRIBUTE_LAYERS`). ``z``: the least-squares linear
        average gradient ``E[grad_z s_a]`` of each score (method ``"truth-average-gradient"``;
        :data:`Z_TRUTH_SAMPLES` faces), with the R^2 of the best linear function of z in
        ``info["r2"]``: the attributes are non-linear in z, so no axis is exact for every face.
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
                method="truth-average-gradient",
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


def average_gradients(n: int = Z_TRUTH_SAMPLES, seed: int = Z_TRUTH_SEED, batch: int = 2048):
    """Monte Carlo ``E[grad_z s_a(z)]`` and ``Var(s_a)`` over ``n`` standard-normal z, float64.

    z are the rows of ``numpy.random.default_rng(seed).standard_normal((n, 512))`` (drawn in
    order, so ``batch`` changes nothing but rounding); each score's gradient is taken by autograd
    through the mapping network and averaged. Returns (gradients (17, 512), variances (17,)).
    The per-face gradients vary little, so this converges fast: 2,048 faces already land within
    a cosine of about 0.994 of it. About 6 s per 1,000 faces on one core.
    """
    if n < 2:
        raise TlganError(f"n must be >= 2 (got {n})")
    rng = np.random.default_rng(seed)
    net = mapping.MappingNetwork()
    count = len(world.ATTRIBUTES)
    total, first, second = np.zeros((count, mapping.Z_DIM)), np.zeros(count), np.zeros(count)
    for start in range(0, n, batch):
        z = torch.from_numpy(rng.standard_normal((min(batch, n - start), mapping.Z_DIM)).astype(np.float32))
        z.requires_grad_(True)
        scores = world.latent_scores(net(z) - net.w_avg)
        for j in range(count):
            (grad,) = torch.autograd.grad(scores[:, j].sum(), z, retain_graph=j < count - 1)
            total[j] += grad.double().sum(0).numpy()
        values = scores.detach().double().numpy()
        first += values.sum(0)
        second += (values**2).sum(0)
    mean = first / n
    return total / n, second / n - mean**2


def stein_estimate(pairs: int, seed: int, chunk: int = 4096) -> np.ndarray:
    """``E[z s_a(z)]`` (Stein's lemma: equal to ``E[grad_z s_a]``), (17, 512) float64: an independent check.

    ``pairs`` z (rows of ``numpy.random.default_rng(seed).standard_normal``) and their negatives
    mapped in float64 NumPy; the least-squares coefficient of the odd part ``(s(z) - s(-z)) / 2``
    on z (population value ``E[z s]``, as ``E[z z^T] = I``). Uses no autograd, but needs about
    30 times the faces of :func:`average_gradients` for the same precision.
    """
    if pairs < 1:
        raise TlganError(f"pairs must be >= 1 (got {pairs})")
    rng = np.random.default_rng(seed)
    w_avg, readout = mapping.stored_calibration()
    directions, bias = world._directions64()
    normals = directions @ readout.astype(np.float64)  # s = normals . (h - w_avg) + b
    w_avg = w_avg.astype(np.float64)
    gram = np.zeros((mapping.Z_DIM, mapping.Z_DIM))
    cross = np.zeros((mapping.Z_DIM, len(bias)))
    for start in range(0, pairs, chunk):
        z = rng.standard_normal((min(chunk, pairs - start), mapping.Z_DIM))
        plus = (mapping.map64(z) - w_avg) @ normals.T
        minus = (mapping.map64(-z) - w_avg) @ normals.T
        gram += z.T @ z
        cross += z.T @ ((plus - minus) / 2)
    return np.ascontiguousarray(np.linalg.solve(gram, cross).T)


def write_z_truth(path=Z_TRUTH_FILE):
    """Store :func:`average_gradients` (float32: unit ``axes``, ``gradient_norm``, ``score_var``)."""
    from safetensors.numpy import save_file

    gradients, variances = average_gradients()
    norms = np.linalg.norm(gradients, axis=1)
    tensors = {  # safetensors stores the raw buffer, so C order
        "axes": np.ascontiguousarray(gradients / norms[:, None], dtype=np.float32),
        "gradient_norm": norms.astype(np.float32),
        "score_var": variances.astype(np.float32),
    }
    meta = {
        "samples": str(Z_TRUTH_SAMPLES),
        "seed": str(Z_TRUTH_SEED),
        "attributes": ",".join(world.ATTRIBUTES),
        "doc": "tlgan.toyfaces.style.average_gradients: E[grad_z s(z)] over standard-normal z",
    }
    save_file(tensors, str(path), metadata=meta)
    _z_truth.cache_clear()
    return path


@lru_cache(maxsize=1)
def _z_truth() -> tuple[np.ndarray, np.ndarray]:
    """(unit average-gradient axes (17, 512), R^2 of the best linear function of z (17,))."""
    from safetensors.numpy import load_file

    if not Z_TRUTH_FILE.is_file():
        raise TlganError(
            f"the toyfaces-style z truth {Z_TRUTH_FILE} is missing; reinstall tlgan, or recreate it "
            f"with tlgan.toyfaces.style.write_z_truth()"
        )
    t = load_file(str(Z_TRUTH_FILE))
    return t["axes"].astype(np.float64), (t["gradient_norm"].astype(np.float64) ** 2) / t["score_var"]
