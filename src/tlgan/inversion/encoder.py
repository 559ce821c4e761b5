"""CNNs that map images back to latents (z, or wp for StyleGAN), and how to save and load one.

The encoder gives a fast first guess of the latent of an image (one forward pass); the
optimiser in :mod:`tlgan.inversion.optimize` then refines it. :mod:`tlgan.train.encoder`
trains it on pairs (z, G(z)) that the frozen generator makes itself; for StyleGAN generators
a :class:`WPEncoder` predicts wp instead (one w plus per-layer offsets kept small, as in e4e).
Files: ``encoder.json`` (architecture, constructor arguments, the generator it belongs to and
a fingerprint of that generator's weights) beside ``encoder.safetensors``. A generator's
bundled encoder is found by :func:`tlgan.models.zoo.bundled_encoder`.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tlgan.errors import TlganError
from tlgan.io import load_state, read_json, save_module
from tlgan.models.base import Generator
from tlgan.models.networks import check_resolution, check_width

log = logging.getLogger(__name__)

ENCODER_FORMAT = "tlgan.encoder/1"
ENCODER_FILE = "encoder"


# ----------------------------------------------------------------------------------------
# The network
# ----------------------------------------------------------------------------------------


class EncoderBlock(nn.Module):
    """(N, C_in, S, S) -> (N, C_out, S/2, S/2): conv 3x3, GroupNorm, LeakyReLU, then a stride-2 conv 4x4.

    GroupNorm rather than BatchNorm so that an image's latent never depends on the other
    images of its batch, in training or at inversion time.
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)
        self.norm1 = nn.GroupNorm(min(8, out_channels), out_channels)
        self.down = nn.Conv2d(out_channels, out_channels, kernel_size=4, stride=2, padding=1)
        self.norm2 = nn.GroupNorm(min(8, out_channels), out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.leaky_relu(self.norm1(self.conv(x)), 0.2)
        return F.leaky_relu(self.norm2(self.down(x)), 0.2)


def encoder_trunk(resolution: int, width: int) -> tuple[nn.Sequential, int]:
    """The shared CNN: :class:`EncoderBlock` s from R down to 4 x 4 with ``width``, 2 x width, ...
    channels (at most 8 x width). Returns (blocks, channels at 4 x 4)."""
    blocks, in_ch = [], 3
    for i in range(int(math.log2(resolution)) - 2):
        out_ch = width * min(8, 2**i)
        blocks.append(EncoderBlock(in_ch, out_ch))
        in_ch = out_ch
    return nn.Sequential(*blocks), in_ch


def _encoder_input(images: torch.Tensor, resolution: int) -> torch.Tensor:
    if images.ndim != 4 or images.shape[1] != 3:
        raise TlganError(f"images must be (N, 3, H, W); got shape {tuple(images.shape)}")
    if images.shape[-2:] != (resolution, resolution):
        images = F.interpolate(
            images, size=(resolution,) * 2, mode="bilinear", align_corners=False, antialias=True
        )
    return images


class LatentEncoder(nn.Module):
    """Images (N, 3, R, R) in [-1, 1] -> latents (N, z_dim) (space ``"z"``).

    :func:`encoder_trunk` halves the side down to 4 x 4; the 4 x 4 map is flattened
    (position matters: the generator places features at fixed spots) and a linear layer
    gives the latent. About 0.1 GMAC per 64 px image at width 32. Inputs of another size are
    resized first.
    """

    space = "z"

    def __init__(self, z_dim: int = 512, resolution: int = 64, width: int = 32):
        super().__init__()
        z_dim, resolution, width = int(z_dim), check_resolution(resolution), check_width(width)
        if z_dim < 1:
            raise TlganError(f"z_dim must be positive, not {z_dim}")
        self.config_kwargs = {"z_dim": z_dim, "resolution": resolution, "width": width}
        self.z_dim = z_dim
        self.resolution = resolution
        self.blocks, channels = encoder_trunk(resolution, width)
        self.head = nn.Linear(channels * 16, z_dim)

    @property
    def latent_shape(self) -> tuple[int, ...]:
        return (self.z_dim,)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(_encoder_input(images, self.resolution)).flatten(1))


class WPEncoder(nn.Module):
    """Images (N, 3, R, R) in [-1, 1] -> wp latents (N, num_ws, w_dim) (space ``"wp"``), e4e-style.

    The trunk of :class:`LatentEncoder` feeds two heads: one w per image from the flattened
    4 x 4 map (relative to the generator's ``w_avg``, a buffer copied from it at training time),
    and offsets for layers 1 .. num_ws - 1 (layer 0 takes w itself) from the map's channel means
    (a small head: at w_dim 256 and 10 layers, 0.6 M weights instead of 9 M from the flat map):

        wp[:, 0] = w_avg + w,    wp[:, k] = w_avg + w + offset_k

    Training keeps the offsets small with an L2 penalty (Tov et al., 2021, "Designing an
    Encoder for StyleGAN Image Manipulation"), so predictions stay near the w space, where
    edits behave; the offset head starts at zero, so an untrained encoder predicts one w.
    """

    space = "wp"

    def __init__(self, w_dim: int = 512, num_ws: int = 12, resolution: int = 64, width: int = 32):
        super().__init__()
        w_dim, num_ws, resolution, width = (
            int(w_dim),
            int(num_ws),
            check_resolution(resolution),
            check_width(width),
        )
        if w_dim < 1 or num_ws < 1:
            raise TlganError(f"w_dim and num_ws must be positive, not {w_dim} and {num_ws}")
        self.config_kwargs = {"w_dim": w_dim, "num_ws": num_ws, "resolution": resolution, "width": width}
        self.w_dim, self.num_ws, self.resolution = w_dim, num_ws, resolution
        self.blocks, channels = encoder_trunk(resolution, width)
        self.head_w = nn.Linear(channels * 16, w_dim)
        self.head_offsets = nn.Linear(channels, (num_ws - 1) * w_dim)
        self.register_buffer("w_avg", torch.zeros(w_dim))

    @property
    def latent_shape(self) -> tuple[int, ...]:
        return (self.num_ws, self.w_dim)

    def parts(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(w (N, w_dim) including w_avg, offsets (N, num_ws - 1, w_dim)) for ``images``."""
        h = self.blocks(_encoder_input(images, self.resolution))
        w = self.w_avg.to(h.dtype) + self.head_w(h.flatten(1))
        return w, self.head_offsets(h.mean(dim=(2, 3))).reshape(h.shape[0], self.num_ws - 1, self.w_dim)

    @staticmethod
    def compose(w: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        """w (N, w_dim) and offsets (N, num_ws - 1, w_dim) -> wp (N, num_ws, w_dim)."""
        return w[:, None, :] + torch.cat([torch.zeros_like(w)[:, None, :], offsets], dim=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.compose(*self.parts(images))


ENCODER_ARCHITECTURES = {"LatentEncoder": LatentEncoder, "WPEncoder": WPEncoder}
"""Architecture name (as written in encoder.json) -> class."""


def make_encoder(generator: Generator, space: str = "z", width: int = 32) -> nn.Module:
    """An untrained encoder into ``generator``'s latent ``space`` ("z" or "wp")."""
    generator.check_space(space)
    if space == "z":
        return LatentEncoder(generator.z_dim, generator.img_resolution, width)
    if space == "wp":
        return WPEncoder(generator.w_dim, generator.num_ws, generator.img_resolution, width)
    raise TlganError(
        f"encoders predict z or wp latents, not {space!r}; use --space wp for a StyleGAN generator"
    )


# ----------------------------------------------------------------------------------------
# Saving and loading
# ----------------------------------------------------------------------------------------


def generator_fingerprint(generator: torch.nn.Module) -> str:
    """SHA-256 (first 16 hex digits) over the generator's parameters and buffers, in key order.

    Stored with an encoder so that loading it for a different generator can be noticed.
    """
    digest = hashlib.sha256()
    for key, value in sorted(generator.state_dict().items()):
        digest.update(key.encode())
        digest.update(value.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def save_encoder(
    encoder: LatentEncoder,
    directory: str | os.PathLike,
    *,
    generator: Generator | None = None,
    generator_spec: str | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``encoder.safetensors`` + ``encoder.json`` into ``directory``."""
    config: dict[str, Any] = {
        "format": ENCODER_FORMAT,
        "architecture": type(encoder).__name__,
        "kwargs": dict(encoder.config_kwargs),
        "space": encoder.space,
        "generator": generator_spec or (generator.name if generator is not None else "unknown"),
        "generator_fingerprint": generator_fingerprint(generator) if generator is not None else None,
    }
    config.update(extra or {})
    save_module(directory, encoder, config, name=ENCODER_FILE)
    return Path(directory)


def load_encoder(
    spec_or_dir: str | os.PathLike,
    generator: Generator | None = None,
    device: str | torch.device = "cpu",
    allow_path: bool = True,
) -> LatentEncoder | WPEncoder | None:
    """The encoder of a generator, or None when it has none.

    ``spec_or_dir`` is a folder holding ``encoder.json`` + ``encoder.safetensors`` (a generator
    folder, or one with only the encoder; folders only with ``allow_path``), or a registered
    generator name (its bundled weights folder is searched). The encoder comes back in eval mode:
    a :class:`LatentEncoder` (space "z") or a :class:`WPEncoder` (space "wp"), as the file says;
    ``encoder.space`` tells which. A folder whose ``encoder.json`` cannot be loaded raises
    TlganError (a broken file should not silently disable the encoder).

    With ``generator``: the latent shape must match (else TlganError); a different weights
    fingerprint only logs a warning, since the encoder's guess is refined by optimisation.
    """
    spec = str(spec_or_dir)
    if allow_path and Path(spec).is_dir():
        directory: Path | None = Path(spec)
    else:
        from tlgan.models.zoo import bundled_folder

        directory = bundled_folder(spec)
    if directory is None or not (directory / f"{ENCODER_FILE}.json").is_file():
        return None
    config_path = directory / f"{ENCODER_FILE}.json"
    config = read_json(config_path)
    known = " or ".join(f'"{name}"' for name in ENCODER_ARCHITECTURES)
    if (
        not isinstance(config, dict)
        or config.get("architecture") not in ENCODER_ARCHITECTURES
        or not isinstance(config.get("kwargs"), dict)
    ):
        raise TlganError(
            f'{config_path}: not a tlgan encoder config (needs "architecture": {known} and '
            f'"kwargs"); train one with `tlgan train encoder`'
        )
    cls = ENCODER_ARCHITECTURES[config["architecture"]]
    try:
        encoder = cls(**config["kwargs"])
    except TypeError as exc:
        raise TlganError(f'{config_path}: "kwargs" do not fit {cls.__name__} ({exc})') from None
    load_state(encoder, directory / f"{ENCODER_FILE}.safetensors")
    encoder.info = config  # type: ignore[attr-defined]
    if generator is not None:
        space = encoder.space
        if space not in generator.spaces or tuple(generator.latent_shape(space)) != tuple(
            encoder.latent_shape
        ):
            has = (
                f"takes {_shape_text(generator.latent_shape(space), False)}"
                if space in generator.spaces
                else f"has no {space!r} space"
            )
            raise TlganError(
                f"{config_path}: this encoder makes {'' if space == 'z' else space + ' '}latents of "
                f"{_shape_text(encoder.latent_shape)} but generator {generator.name!r} {has}; "
                f"train an encoder for it with `tlgan train encoder`"
            )
        expected = config.get("generator_fingerprint")
        if expected and expected != generator_fingerprint(generator):
            log.warning(
                "%s was trained for other generator weights (%s); its guesses may be poor (optimisation "
                "still refines them)",
                config_path,
                config.get("generator"),
            )
    return encoder.to(device).eval()


def check_encoder_for(encoder: LatentEncoder, generator: Generator, space: str) -> None:
    """The encoder's latents must fit the generator, and ``space`` must be reachable from the encoder's space."""
    generator.check_space(encoder.space)
    if tuple(encoder.latent_shape) != tuple(generator.latent_shape(encoder.space)):
        raise TlganError(
            f"the encoder makes {encoder.space} latents of shape {tuple(encoder.latent_shape)}, generator "
            f"{generator.name!r} takes {tuple(generator.latent_shape(encoder.space))}; use the "
            f"generator's own encoder"
        )
    order = ("z", "w", "wp")
    if order.index(space) < order.index(encoder.space):
        raise TlganError(
            f"a {encoder.space} encoder cannot start a search in {space!r}; invert with --space "
            f"{encoder.space}, or without the encoder (--encoder none)"
        )


def _shape_text(shape, named: bool = True) -> str:
    """(16,) -> "size 16", (6, 8) -> "shape 6 x 8" (without the word when not ``named``)."""
    text = " x ".join(str(int(n)) for n in shape)
    return (("size " if len(shape) == 1 else "shape ") + text) if named else text


# ----------------------------------------------------------------------------------------
# Helpers shared with the optimiser (the losses live in tlgan.inversion.losses)
# ----------------------------------------------------------------------------------------


@contextmanager
def frozen(*modules: nn.Module | None) -> Iterator[None]:
    """Modules in eval mode with ``requires_grad`` off inside the block; both restored after.

    Gradients then flow through a frozen generator to its input only, which is all that
    encoder training and latent optimisation need, and BatchNorm uses running statistics
    (an image's result never depends on the rest of its batch).
    """
    modules = tuple(m for m in modules if m is not None)
    # Every submodule's own mode: m.train(flag) would set them all alike, turning an inner
    # network that was in eval mode inside a wrapper in training mode into training mode.
    modes = [(sub, sub.training) for m in modules for sub in m.modules()]
    params = [(p, p.requires_grad) for m in modules for p in m.parameters()]
    for m in modules:
        m.eval()
        for p in m.parameters():
            p.requires_grad_(False)
    try:
        yield
    finally:
        for sub, training in modes:
            sub.training = training
        for p, flag in params:
            p.requires_grad_(flag)


def psnr_db(images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio per image (N,) in dB, for images in [-1, 1] (peak-to-peak 2)."""
    mse = (images.float().clamp(-1, 1) - targets.float()).pow(2).flatten(1).mean(1)
    return 10.0 * torch.log10(4.0 / mse.clamp_min(1e-12))


@torch.no_grad()
def evaluate_encoder(
    encoder: LatentEncoder, generator: Generator, n: int = 64, seed: int = 1000, batch_size: int = 64
) -> dict[str, float]:
    """Encoder-only reconstruction of ``n`` generated faces of ``seed``: mean PSNR (dB) and the
    relative latent error |pred - true|^2 / |true|^2 in the encoder's space (for wp, true = w
    repeated, measured from ``w_avg``)."""
    device = next(encoder.parameters()).device
    space = getattr(encoder, "space", "z")
    psnrs, errs = [], []
    with frozen(generator, encoder):
        for start in range(0, n, batch_size):
            z = generator.sample_latents(min(batch_size, n - start), seed=seed, start=start).to(device)
            true = z if space == "z" else generator.map_latents(z, "z", space)
            x = generator.synthesize(true, space)
            pred = encoder(x)
            psnrs.append(psnr_db(generator.synthesize(pred, space), x).cpu())
            if space == "wp":
                pred, true = pred - encoder.w_avg, true - encoder.w_avg
            errs.append(((pred - true).pow(2).flatten(1).sum(1) / true.pow(2).flatten(1).sum(1)).cpu())
    return {
        "psnr_db_mean": round(float(torch.cat(psnrs).mean()), 3),
        "latent_relative_error": round(float(torch.cat(errs).mean()), 4),
    }
