"""The two contracts every model in tlgan satisfies.

A :class:`Generator` maps latents of a named space to images; a :class:`Classifier` maps
images to one logit per attribute. Images crossing these boundaries are always float
tensors of shape (N, 3, H, W) with values in [-1, 1]. Wrappers adapt user modules that
use other ranges or sizes, so nothing downstream has to know.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from tlgan.errors import TlganError

LATENT_BLOCK = 256


def latent_rng_normal(seed: int, indices: Sequence[int] | np.ndarray, dim: int) -> torch.Tensor:
    """Standard-normal latents where row k depends only on (seed, indices[k]).

    Sample i is row ``i % LATENT_BLOCK`` of block ``i // LATENT_BLOCK``; each block is drawn
    from a counter-based generator (Philox) keyed by the seed with the block number as the
    counter. So a sample's latent is the same whatever the batch size or the point where a
    run was resumed, and drawing a whole batch costs one generator per block, not per row.
    A block's rows come out of its generator in order, so only the rows up to the last one
    asked for are drawn (a single latent, as the studio asks for, costs half a block on average).
    """
    indices = np.asarray(indices, dtype=np.int64).reshape(-1)
    if len(indices) and indices.min() < 0:
        raise TlganError("sample indices must be >= 0")
    key = int(seed) % (2**63)
    out = np.empty((len(indices), dim), dtype=np.float32)
    blocks = indices // LATENT_BLOCK
    for block in np.unique(blocks):
        rows = np.nonzero(blocks == block)[0]
        bitgen = np.random.Philox(key=key, counter=[int(block), int(dim), 0, 0])
        within = indices[rows] % LATENT_BLOCK
        drawn = np.random.Generator(bitgen).standard_normal((int(within.max()) + 1, dim), dtype=np.float32)
        out[rows] = drawn[within]
    return torch.from_numpy(out)


SPACES = ("z", "w", "wp")
"""The latent spaces tlgan knows, in InterFaceGAN's names: ``z`` (N, z_dim) the sampled input,
``w`` (N, w_dim) the mapping network's output, ``wp`` (N, num_ws, w_dim) one w per synthesis
layer (W+)."""


class Generator(torch.nn.Module):
    """Base class: ``synthesize(latents, space)`` -> images in [-1, 1], shape (N, 3, R, R).

    Subclasses set ``name``, ``z_dim``, ``img_resolution`` and implement ``_synthesize``.
    ``spaces`` lists the latent spaces it accepts; "z" is always first. A generator with a
    mapping network (StyleGAN) also sets ``w_dim`` and ``num_ws`` and implements
    :meth:`_map_latents` for the steps z -> w -> wp.
    """

    name: str = "generator"
    z_dim: int = 512
    w_dim: int = 0
    num_ws: int = 0
    img_resolution: int = 64
    img_channels: int = 3
    spaces: tuple[str, ...] = ("z",)

    @property
    def default_space(self) -> str:
        """Where its faces are sampled and its axes fitted unless told otherwise: w when it has a
        mapping network (InterFaceGAN found w cleaner), else z."""
        return "w" if "w" in self.spaces else "z"

    def latent_shape(self, space: str = "z") -> tuple[int, ...]:
        """The shape of one latent of ``space``: (z_dim,), (w_dim,) or (num_ws, w_dim)."""
        self.check_space(space)
        if space == "z":
            return (self.z_dim,)
        if space == "w":
            return (self.w_dim,)
        return (self.num_ws, self.w_dim)

    def latent_dim(self, space: str = "z") -> int:
        """Size of one latent vector of ``space``; for ``wp`` the size of each layer's w (w_dim)."""
        return self.latent_shape(space)[-1]

    def check_space(self, space: str) -> None:
        if space not in self.spaces:
            known = f"; tlgan's spaces are {', '.join(SPACES)}" if space not in SPACES else ""
            raise TlganError(
                f"generator {self.name!r} has no latent space {space!r}; it has {', '.join(self.spaces)}"
                + known
            )

    def sample_latents(self, n: int, seed: int = 0, start: int = 0, space: str = "z") -> torch.Tensor:
        """Latents for samples start..start+n-1 of ``seed`` (float32, CPU)."""
        return self.sample_latents_at(np.arange(start, start + n), seed=seed, space=space)

    def sample_latents_at(self, indices, seed: int = 0, space: str = "z") -> torch.Tensor:
        """Latents of samples ``indices`` of ``seed`` in ``space`` (float32, CPU).

        Sample i's z depends only on (seed, i); its w and wp are the mapping of that z.
        """
        self.check_space(space)
        z = latent_rng_normal(seed, indices, self.z_dim)
        if space == "z":
            return z
        with torch.inference_mode():
            return self.map_latents(z, "z", space).float().cpu().clone()

    def check_latents(self, latents: torch.Tensor, space: str = "z") -> torch.Tensor:
        """``latents`` as a float tensor (N, *latent_shape(space)); one latent without the N is accepted.

        Raises TlganError naming the space and the shape expected when the shape does not fit,
        and for NaN or infinite values.
        """
        shape = self.latent_shape(space)
        if not isinstance(latents, torch.Tensor):
            latents = torch.as_tensor(np.asarray(latents, dtype=np.float32))
        if latents.ndim == len(shape):
            latents = latents[None]
        if latents.ndim != len(shape) + 1 or tuple(latents.shape[1:]) != shape:
            want = " x ".join(str(s) for s in shape)
            raise TlganError(
                f"latent of shape {tuple(latents.shape)} does not fit generator {self.name!r}: "
                f"space {space!r} needs {'vectors of size ' + want if len(shape) == 1 else want + ' arrays'}"
                f" (a batch adds a leading dimension)"
            )
        if not torch.isfinite(latents).all():
            raise TlganError("latents contain NaN or infinite values")
        return latents

    def map_latents(self, latents: torch.Tensor, space: str, to: str) -> torch.Tensor:
        """Move latents along z -> w -> wp: ``map_latents(z, "z", "w")`` is the mapping network.

        Only forward steps exist (a mapping network cannot be inverted); ``space == to`` returns
        the latents checked. Device follows the generator; gradients flow.
        """
        order = {name: i for i, name in enumerate(SPACES)}
        latents = self.check_latents(latents, space)
        self.check_space(to)
        if order[to] < order[space]:
            raise TlganError(
                f"cannot map latents from {space!r} back to {to!r}: the mapping only goes z -> w -> wp; "
                f"invert images instead (`tlgan invert --space {to}`)"
            )
        if space == to:
            return latents
        return self._map_latents(latents.to(self.device), space, to)

    def _map_latents(self, latents: torch.Tensor, space: str, to: str) -> torch.Tensor:
        raise NotImplementedError

    @property
    def device(self) -> torch.device:
        return next(iter(self.parameters()), next(iter(self.buffers()), torch.empty(0))).device

    def synthesize(self, latents: torch.Tensor, space: str = "z") -> torch.Tensor:
        latents = self.check_latents(latents, space)
        return self._synthesize(latents.to(self.device), space)

    def forward(self, latents: torch.Tensor, space: str = "z") -> torch.Tensor:  # noqa: D401
        return self.synthesize(latents, space)

    def noise_maps(self) -> dict[str, torch.Tensor]:
        """The network's stored constant noise maps by name ({} for networks without noise, the default).

        The values are the buffers themselves (writing into one changes the network); each holds
        one (R, R) map at its layer's resolution R, with leading dimensions of size 1 where the
        network stores them so (StyleGAN's are (1, 1, R, R)). The names are those that
        :meth:`synthesize_raw` takes in ``noise``.
        """
        return {}

    def synthesize_raw(self, wp: torch.Tensor, noise: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """Images (N, 3, R, R) from wp latents (N, num_ws, w_dim), in the generator's raw range; gradients flow.

        What :meth:`synthesize` returns before its final clamp to [-1, 1] (a clamp's zero gradient
        would trap pixels that overshoot, so losses use this). ``noise`` replaces the named maps
        of :meth:`noise_maps` for this call with maps (N, 1, R, R) (or any shape that broadcasts
        against them, e.g. (1, 1, R, R)); the others stay as stored, and without ``noise`` the
        generator's noise mode applies. Raises TlganError for a generator without a wp space,
        for ``noise`` given to a generator without noise maps, and for unknown map names.
        """
        if "wp" not in self.spaces:
            raise TlganError(
                f"generator {self.name!r} has no wp space (it takes {', '.join(self.spaces)}), so no raw "
                f"synthesis from wp latents; use synthesize(latents, space)"
            )
        raise NotImplementedError(
            f"{type(self).__name__} has a wp space but does not implement synthesize_raw"
        )

    def check_noise(self, noise: dict[str, torch.Tensor] | None) -> None:
        """Raise TlganError unless every name in ``noise`` is one of :meth:`noise_maps` (None and {} pass)."""
        if not noise:
            return
        known = self.noise_maps()
        if not known:
            raise TlganError(
                f"generator {self.name!r} has no noise maps to replace (noise is for StyleGAN2 and StyleGAN "
                f"generators); pass noise=None"
            )
        unknown = sorted(set(noise) - set(known))
        if unknown:
            raise TlganError(
                f"generator {self.name!r} has no noise map(s) {', '.join(unknown[:3])}; its maps are "
                f"{', '.join(sorted(known)[:4])}{', ...' if len(known) > 4 else ''}"
            )

    def _synthesize(self, latents: torch.Tensor, space: str) -> torch.Tensor:
        raise NotImplementedError

    @property
    def options(self) -> dict[str, Any]:
        """Settings chosen at load time that change its images (truncation, noise); recorded in manifests."""
        return {}

    def configure(self, **options: Any) -> Generator:
        """Apply load-time settings (``load_generator(spec, truncation_psi=0.7)``); returns self.

        The base class has none: any option is refused with a message naming it.
        """
        if options:
            raise TlganError(
                f"generator {self.name!r} takes no options ({', '.join(sorted(options))}); "
                f"truncation and noise settings apply to StyleGAN generators only"
            )
        return self

    def true_axes(self, attributes: Sequence[str] | None = None, space: str = "z"):
        """The ground-truth attribute axes, for generators that know them (else None)."""
        return None

    def latent_weight(self, space: str = "z", layers: Sequence[int] | None = None) -> torch.Tensor:
        """The (F, D) weight of the first layer(s) that take a latent of ``space`` (D = latent_dim(space)).

        SeFa factorises it. This default finds it for plain networks: the first ``nn.Linear`` (in
        module order) with ``in_features == D``, or a first ``nn.ConvTranspose2d`` with
        ``in_channels == D`` (which takes the latent as an (N, D, 1, 1) map; its (D, C, k, k)
        kernel becomes (C*k*k, D)). Style-based generators override it and choose their style
        layers with ``layers`` (indices; None = all); here ``layers`` must be None.
        Raises TlganError when no such layer exists.
        """
        self.check_space(space)
        if layers is not None:
            raise TlganError(
                f"generator {self.name!r} has a single layer that takes the latent; `layers` chooses "
                f"style layers of style-based generators: leave it unset"
            )
        dim = self.latent_dim(space)
        if space == self.spaces[0]:
            for module in self.modules():
                if isinstance(module, torch.nn.Linear) and module.in_features == dim:
                    return module.weight.detach()
                if isinstance(module, torch.nn.ConvTranspose2d) and module.in_channels == dim:
                    return module.weight.detach().reshape(dim, -1).T
        raise TlganError(
            f"sefa cannot find the weight of the first layer that takes a {space!r} latent of size {dim} "
            f"in generator {self.name!r} (no nn.Linear with in_features={dim} or nn.ConvTranspose2d with "
            f"in_channels={dim}); override latent_weight(space, layers) to return it as an (F, {dim}) "
            f"tensor, or use the pca finder"
        )

    #: Name (as in ``named_modules()``) of the early layer whose activations the pca finder
    #: reads for z latents, GANSpace's choice for generators without a style space; None = none.
    feature_layer: str | None = None

    def activations(self, latents: torch.Tensor, space: str = "z", layer: str | None = None) -> torch.Tensor:
        """(N, F) output of the module named ``layer`` (default :attr:`feature_layer`), flattened per sample.

        The network runs only up to that module. Raises TlganError when there is no such module.
        """
        layer = layer or self.feature_layer
        modules = dict(self.named_modules())
        if not layer or layer not in modules:
            from tlgan.registry import unknown_name_message

            known = [n for n in modules if n]
            if not layer:
                raise TlganError(
                    f"generator {self.name!r} names no feature layer for activation PCA; choose one of "
                    f"its modules with layer=... ({', '.join(known[:12]) or 'it has none'})"
                )
            raise TlganError(
                unknown_name_message("layer", layer, known) + f" (modules of generator {self.name!r})"
            )
        captured = []

        def stop(module, args, output):
            captured.append(output)
            raise _StopForward

        handle = modules[layer].register_forward_hook(stop)
        try:
            self.synthesize(latents, space)
        except _StopForward:
            pass
        finally:
            handle.remove()
        if not captured:
            raise TlganError(f"layer {layer!r} of generator {self.name!r} did not run for {space!r} latents")
        return captured[0].reshape(len(captured[0]), -1)


class _StopForward(Exception):
    """Raised by a forward hook to end a pass once the wanted activations are captured."""


class Classifier(torch.nn.Module):
    """Base class: ``logits(images)`` -> (N, A) logits, one per name in ``attributes``.

    Input images are (N, 3, H, W) in [-1, 1]; they are resized to ``input_resolution``.
    """

    name: str = "classifier"
    attributes: tuple[str, ...] = ()
    input_resolution: int = 64

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise TlganError(f"images must be (N, 3, H, W); got shape {tuple(images.shape)}")
        if images.shape[-1] != self.input_resolution or images.shape[-2] != self.input_resolution:
            images = F.interpolate(
                images,
                size=(self.input_resolution,) * 2,
                mode="bilinear",
                align_corners=False,
                antialias=True,
            )
        return self._logits(images)

    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(images))

    def features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Hidden activations for perceptual losses (inversion, tuning, distillation): a list of (N, ...) tensors.

        The hook to override. By default: the input of the last layer with weights (the
        penultimate activations, e.g. what the final linear head sees), captured during
        :meth:`logits`. Subclasses with a better set of layers return those (tlgan's own
        CNN returns every block's output); :class:`ModuleClassifier` takes ``feature_layers``.
        A subclass must not store a submodule under the name ``features`` (it would hide this method).
        """
        layer = _last_weighted_layer(self)
        if layer is None:
            raise TlganError(
                f"classifier {self.name!r} has no layer with weights to take features from; "
                f"override features(images), or invert without a classifier"
            )
        captured: list[torch.Tensor] = []
        handle = layer.register_forward_pre_hook(lambda module, args: captured.append(args[0]))
        try:
            self.logits(images)
        finally:
            handle.remove()
        if not captured or not isinstance(captured[-1], torch.Tensor):
            raise TlganError(
                f"classifier {self.name!r}: its last layer with weights was not seen running (a "
                f"TorchScript module runs its layers out of reach of hooks); override features(images), "
                f"or invert with --classifier none"
            )
        return [captured[-1]]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.logits(images)

    def _logits(self, images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def attribute_index(self, name: str) -> int:
        from tlgan.registry import unknown_name_message

        if name not in self.attributes:
            raise TlganError(unknown_name_message("attribute", name, list(self.attributes)))
        return self.attributes.index(name)


def _last_weighted_layer(module: torch.nn.Module) -> torch.nn.Module | None:
    """The last registered leaf module that owns parameters (registration order is call order in
    the usual Sequential-style networks), or None."""
    last = None
    for sub in module.modules():
        if not any(True for _ in sub.children()) and any(True for _ in sub.parameters(recurse=False)):
            last = sub
    return last


class ModuleGenerator(Generator):
    """Wrap any ``torch.nn.Module`` that maps (N, z_dim) latents to (N, 3, H, W) images.

    >>> G = ModuleGenerator(my_net, z_dim=128, output_range=(0, 1), name="mine")
    """

    def __init__(
        self,
        module: torch.nn.Module,
        z_dim: int,
        output_range: tuple[float, float] = (-1.0, 1.0),
        name: str = "custom",
        img_resolution: int | None = None,
    ):
        super().__init__()
        self.module = module
        self.z_dim = int(z_dim)
        self.name = name
        self.output_range = (float(output_range[0]), float(output_range[1]))
        if img_resolution is None:
            with torch.no_grad():
                probe = module(torch.zeros(1, self.z_dim))
            img_resolution = int(probe.shape[-1])
        self.img_resolution = int(img_resolution)

    def _synthesize(self, latents, space):
        lo, hi = self.output_range
        images = self.module(latents)
        return (images - lo) / (hi - lo) * 2.0 - 1.0


class ModuleClassifier(Classifier):
    """Wrap any ``torch.nn.Module`` that maps images to per-attribute scores.

    ``input_range`` is the value range the module expects (images are rescaled from
    [-1, 1]); ``output`` says whether it returns "logits" or "probabilities".
    ``feature_layers`` names submodules of ``module`` (as in ``module.named_modules()``, e.g.
    ``["3", "6"]`` for a Sequential) whose outputs :meth:`features` returns; by default it is
    the input of the last layer with weights (the penultimate activations).
    """

    def __init__(
        self,
        module: torch.nn.Module,
        attributes: Sequence[str],
        input_resolution: int = 64,
        input_range: tuple[float, float] = (-1.0, 1.0),
        output: str = "logits",
        name: str = "custom",
        feature_layers: Sequence[str] | None = None,
    ):
        super().__init__()
        if output not in ("logits", "probabilities"):
            raise TlganError(f"output must be 'logits' or 'probabilities', not {output!r}")
        named = dict(module.named_modules())
        self.feature_layers = None if feature_layers is None else [str(n) for n in feature_layers]
        missing = [n for n in (self.feature_layers or []) if n not in named or n == ""]
        if missing:
            raise TlganError(
                f"feature_layers {missing} are not submodules of the classifier; "
                f"it has {', '.join(n for n in named if n)[:300]}"
            )
        self.module = module
        self.attributes = tuple(attributes)
        self.input_resolution = int(input_resolution)
        self.input_range = (float(input_range[0]), float(input_range[1]))
        self.output = output
        self.name = name

    def features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Outputs of ``feature_layers`` in the order named, or the penultimate activations (see Classifier)."""
        if self.feature_layers is None:
            return super().features(images)
        named = dict(self.module.named_modules())
        captured: dict[str, torch.Tensor] = {}
        handles = [
            named[n].register_forward_hook(lambda m, a, out, n=n: captured.__setitem__(n, out))
            for n in self.feature_layers
        ]
        try:
            self.logits(images)
        finally:
            for h in handles:
                h.remove()
        return [captured[n] for n in self.feature_layers]

    def _logits(self, images):
        lo, hi = self.input_range
        out = self.module((images + 1.0) / 2.0 * (hi - lo) + lo)
        if out.shape[-1] != len(self.attributes):
            raise TlganError(
                f"classifier returned {out.shape[-1]} scores but {len(self.attributes)} attribute names were given"
            )
        if self.output == "probabilities":
            out = torch.logit(out.clamp(1e-6, 1 - 1e-6))
        return out
