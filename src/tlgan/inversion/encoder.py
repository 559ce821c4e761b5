"""CNNs that map images back to latents (z, or wp for StyleGAN), and how to train, save and find one.

The encoder gives a fast first guess of the latent of an image (one forward pass); the
optimiser in :mod:`tlgan.inversion.optimize` then refines it. It is trained on pairs
(z, G(z)) that the frozen generator makes itself, so no data set is needed:

    loss = latent_weight * |E(G(z)) - z|^2 / D                      (latent regression)
         + pixel_weight  * |G(E(G(z))) - G(z)|^2 / (3 R^2)          (reconstruction through G)
         + feature_weight * classifier feature distance             (when a classifier is given)

and, with ``real_data``, the reconstruction terms on real images too (their latent is
unknown). For StyleGAN generators a :class:`WPEncoder` predicts wp instead (``space="wp"``):
one w plus per-layer offsets kept small by an L2 penalty, as in e4e. Files: ``encoder.json`` (architecture, constructor arguments, the generator it
belongs to and a fingerprint of that generator's weights) beside ``encoder.safetensors``.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from tlgan.errors import TlganError
from tlgan.inversion.losses import feature_distance
from tlgan.io import load_state, load_tensors, read_json, save_module, save_tensors, write_json
from tlgan.models.base import Classifier, Generator
from tlgan.models.networks import check_resolution, check_width

log = logging.getLogger(__name__)

ENCODER_FORMAT = "tlgan.encoder/1"
CHECKPOINT_FORMAT = "tlgan.encoder-checkpoint/1"
ENCODER_FILE = "encoder"
CHECKPOINT_DIR = "encoder-checkpoint"


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
# Saving, loading, finding
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


def load_encoder_dir(
    directory: str | os.PathLike, generator: Generator | None = None, device: str | torch.device = "cpu"
) -> LatentEncoder:
    """Load ``directory/encoder.json`` + ``encoder.safetensors`` (eval mode): a :class:`LatentEncoder`
    (space "z") or a :class:`WPEncoder` (space "wp"), as the file says; ``encoder.space`` tells which.

    With ``generator``: the latent shape must match (else TlganError); a different weights
    fingerprint only logs a warning, since the encoder's guess is refined by optimisation.
    """
    directory = Path(directory)
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


def _shape_text(shape, named: bool = True) -> str:
    """(16,) -> "size 16", (6, 8) -> "shape 6 x 8" (without the word when not ``named``)."""
    text = " x ".join(str(int(n)) for n in shape)
    return (("size " if len(shape) == 1 else "shape ") + text) if named else text


def encoder_dir_for(generator_spec: str, allow_path: bool = True) -> Path | None:
    """The folder that should hold the encoder of ``generator_spec``, or None.

    A folder (when ``allow_path``) is itself the answer; a registered generator name maps
    to its bundled weights folder.
    """
    spec = str(generator_spec)
    if allow_path and Path(spec).is_dir():
        return Path(spec)
    from tlgan.models import GENERATORS, _ensure_registered
    from tlgan.models.zoo import WEIGHTS

    _ensure_registered()
    if spec in GENERATORS and (WEIGHTS / spec).is_dir():
        return WEIGHTS / spec
    return None


def bundled_encoder_dirs() -> list[tuple[Path, str | None]]:
    """(folder, stored generator fingerprint) for every bundled weights folder holding an encoder."""
    from tlgan.models.zoo import WEIGHTS

    found = []
    for config_path in sorted(WEIGHTS.glob(f"*/{ENCODER_FILE}.json")):
        try:
            config = read_json(config_path)
        except TlganError as exc:
            log.warning("skipping %s (%s)", config_path, exc)
            continue
        found.append(
            (config_path.parent, config.get("generator_fingerprint") if isinstance(config, dict) else None)
        )
    return found


def load_encoder(
    generator_spec_or_dir: str | os.PathLike,
    generator: Generator | None = None,
    device: str | torch.device = "cpu",
    allow_path: bool = True,
) -> LatentEncoder | None:
    """The encoder shipped with a generator, or None when it has none.

    ``generator_spec_or_dir`` is a registered generator name (its bundled weights folder
    is searched), a generator folder, or a folder holding only ``encoder.json`` +
    ``encoder.safetensors`` (folders only with ``allow_path``). A folder that has an
    ``encoder.json`` that cannot be loaded raises TlganError (a broken file should not
    silently disable the encoder).
    """
    directory = encoder_dir_for(str(generator_spec_or_dir), allow_path=allow_path)
    if directory is None or not (directory / f"{ENCODER_FILE}.json").is_file():
        return None
    return load_encoder_dir(directory, generator=generator, device=device)


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


# ----------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------


def _optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Flatten an optimizer state dict into named tensors plus a JSON-able remainder."""
    state = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, entry in state["state"].items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{idx}.{key}"] = value
            else:
                scalars.setdefault(str(idx), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _restore_optimizer(
    opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict[str, Any]
) -> None:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("optimizer."):
            _, idx, key = name.split(".", 2)
            state.setdefault(int(idx), {})[key] = value
    for idx, entries in meta.get("scalars", {}).items():
        state.setdefault(int(idx), {}).update(entries)
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def _save_checkpoint(
    directory: Path,
    encoder: LatentEncoder,
    opt: torch.optim.Optimizer,
    step: int,
    settings: dict[str, Any],
    history: list[dict[str, float]],
) -> None:
    opt_tensors, opt_meta = _optimizer_tensors(opt)
    tensors = {f"encoder.{k}": v for k, v in encoder.state_dict().items()}
    tensors.update(opt_tensors)
    save_tensors(directory / "state.safetensors", tensors, {"format": CHECKPOINT_FORMAT, "step": step})
    # The JSON is written last: it names the step, so a checkpoint counts only once both files exist.
    write_json(
        directory / "state.json",
        {
            "format": CHECKPOINT_FORMAT,
            "step": step,
            "settings": settings,
            "optimizer": opt_meta,
            "history": history,
        },
    )


def _load_checkpoint(
    directory: Path, encoder: LatentEncoder, opt: torch.optim.Optimizer, settings: dict[str, Any]
) -> tuple[int, list[dict[str, float]]]:
    meta = read_json(directory / "state.json")
    tensors, tmeta = load_tensors(directory / "state.safetensors")
    if meta.get("format") != CHECKPOINT_FORMAT or tmeta.get("step") != meta.get("step"):
        raise TlganError(
            f"{directory}: the checkpoint files do not belong together (interrupted write?); "
            f"delete the folder to start again"
        )
    saved = meta.get("settings", {})
    differ = {k: (saved.get(k), v) for k, v in settings.items() if k not in ("steps",) and saved.get(k) != v}
    if differ:
        raise TlganError(
            f"{directory}: cannot resume with different settings "
            + ", ".join(f"{k}: was {a!r}, now {b!r}" for k, (a, b) in differ.items())
            + "; use the same options or start in a new --out folder"
        )
    prefix = "encoder."
    own = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
    missing = set(encoder.state_dict()) - set(own)
    if missing:
        raise TlganError(
            f"{directory}: checkpoint lacks encoder tensors {sorted(missing)[:3]}; delete it to start again"
        )
    encoder.load_state_dict(own, strict=True)
    _restore_optimizer(opt, tensors, meta["optimizer"])
    return int(meta["step"]), list(meta.get("history", []))


def _learning_rate(step: int, steps: int, lr: float) -> float:
    """Linear warm-up over min(50, steps / 10) steps, then cosine decay to 5% of ``lr`` at ``steps``."""
    warmup = min(50, steps // 10)
    if step < warmup:
        return lr * (step + 1) / warmup
    t = min(1.0, (step - warmup) / max(1, steps - warmup))
    return lr * (0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * t)))


def _real_sampler(real_data, resolution: int, batch_size: int, seed: int, device):
    """``real_data`` (a folder path, uint8 or float images (N, 3, R, R)) -> a BatchSampler."""
    from tlgan.data.images import BatchSampler, ImageFolder

    if isinstance(real_data, (str, os.PathLike)):
        images = ImageFolder(real_data, resolution=resolution).images
    elif isinstance(real_data, torch.Tensor):
        images = real_data
        if images.dtype != torch.uint8:
            images = ((images.float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)
    else:
        raise TlganError(
            f"real_data must be a folder of images or an image tensor, not {type(real_data).__name__}"
        )
    if (
        images.ndim != 4
        or images.shape[1] != 3
        or images.shape[-1] != resolution
        or images.shape[-2] != resolution
    ):
        raise TlganError(f"real images must be (N, 3, {resolution}, {resolution}); got {tuple(images.shape)}")
    return BatchSampler(images, batch_size=batch_size, seed=seed + 1, flip=True, device=device)


def train_encoder(
    generator: Generator,
    out_dir: str | os.PathLike,
    *,
    steps: int = 3000,
    batch_size: int = 32,
    lr: float = 1e-3,
    device: str | torch.device = "cpu",
    seed: int = 0,
    classifier: Classifier | None = None,
    real_data=None,
    resume: bool = False,
    width: int = 32,
    latent_weight: float = 1.0,
    pixel_weight: float = 1.0,
    feature_weight: float = 0.1,
    checkpoint_every: int = 250,
    generator_spec: str | None = None,
    progress: bool = True,
    space: str = "z",
    offset_weight: float = 1.0,
) -> dict[str, Any]:
    """Train an encoder for ``generator`` and save it into ``out_dir``.

    ``space="z"``: a :class:`LatentEncoder`, latent loss |E(x) - z|^2 / D. ``space="wp"`` (StyleGAN
    generators): a :class:`WPEncoder` whose w is centred on the generator's ``w_avg``; its latent
    loss is the mean squared error to the true wp (w repeated) divided by the mean square of
    w - w_avg, and ``offset_weight`` x the mean square of its per-layer offsets (same scale)
    keeps them small (an e4e-style encoder).

    Each step draws latents ``z`` of samples ``step * batch_size ...`` of ``seed`` (so a
    resumed run sees the same batches), makes ``x = G(z)`` without gradients and minimises
    the loss in the module docstring. ``real_data`` (a folder, or images (N, 3, R, R)) adds
    an equal-sized batch of real images trained through reconstruction only. Checkpoints
    (safetensors + JSON, no pickles) go to ``out_dir/encoder-checkpoint/`` every
    ``checkpoint_every`` steps; ``resume=True`` continues from there. The final encoder is
    ``out_dir/encoder.{json,safetensors}``. Returns a summary: final losses, and the
    encoder's PSNR (dB) on 64 fresh generated faces (samples of seed ``seed + 1000``).
    """
    if steps < 1 or batch_size < 1:
        raise TlganError(f"steps and batch_size must be at least 1 (got {steps}, {batch_size})")
    if classifier is None:
        feature_weight = 0.0
    out_dir = Path(out_dir)
    ckpt_dir = out_dir / CHECKPOINT_DIR
    torch_device = torch.device(device)
    generator = generator.to(torch_device)
    if classifier is not None:
        classifier = classifier.to(torch_device)
    encoder = make_encoder(generator, space, width)
    encoder.apply(_reset(seed))  # initial weights depend only on the seed
    w_scale = 1.0
    if space == "wp":
        w_avg, w_scale = _w_statistics(generator, seed)
        with torch.no_grad():
            encoder.w_avg.copy_(w_avg)
            encoder.head_offsets.weight.zero_()  # start from one w per image (e4e)
    encoder.to(torch_device).train()
    opt = torch.optim.Adam(encoder.parameters(), lr=lr, betas=(0.9, 0.99))
    settings = {
        "generator": generator_spec or generator.name,
        "generator_fingerprint": generator_fingerprint(generator),
        "batch_size": batch_size,
        "lr": lr,
        "seed": seed,
        "width": width,
        "latent_weight": latent_weight,
        "pixel_weight": pixel_weight,
        "feature_weight": feature_weight,
        "real_data": real_data is not None,
        "steps": steps,
    }
    if space != "z":  # only then, so that z checkpoints written before spaces existed still resume
        settings.update({"space": space, "offset_weight": offset_weight})
    start_step, history = 0, []
    if resume and (ckpt_dir / "state.json").is_file():
        start_step, history = _load_checkpoint(ckpt_dir, encoder, opt, settings)
        log.info("resuming encoder training at step %d of %d", start_step, steps)
    elif resume:
        log.info("no checkpoint in %s; starting from step 0", ckpt_dir)
    elif (ckpt_dir / "state.json").is_file():
        raise TlganError(
            f"{ckpt_dir} holds a checkpoint; pass resume=True (--resume) to continue it, or use a new "
            f"output folder"
        )
    real = None
    if real_data is not None:
        real = _real_sampler(real_data, generator.img_resolution, batch_size, seed, torch_device)

    t0 = time.perf_counter()
    bar = tqdm(
        range(start_step, steps),
        desc="training encoder",
        unit="step",
        disable=None if progress else True,
        initial=start_step,
        total=steps,
    )
    d = float(generator.z_dim)
    log_every = max(1, steps // 200)
    with frozen(generator, classifier):
        for step in bar:
            for group in opt.param_groups:
                group["lr"] = _learning_rate(step, steps, lr)
            z = generator.sample_latents_at(np.arange(step * batch_size, (step + 1) * batch_size), seed=seed)
            z = z.to(torch_device)
            with torch.no_grad():
                target = z if space == "z" else generator.map_latents(z, "z", space)
                x = generator.synthesize(target, space)
            images = x if real is None else torch.cat([x, real.batch(step)[0]])
            if space == "wp":
                w, offsets = encoder.parts(images)
                pred = encoder.compose(w, offsets)
                loss_latent = (pred[:batch_size] - target).pow(2).mean() / w_scale
                loss_offsets = offsets.pow(2).mean() / w_scale
                loss = latent_weight * loss_latent + offset_weight * loss_offsets
                record = {"step": step + 1, "latent": loss_latent.item(), "offsets": loss_offsets.item()}
            else:
                pred = encoder(images)
                loss_latent = (pred[:batch_size] - z).pow(2).sum(1).mean() / d
                loss = latent_weight * loss_latent
                record = {"step": step + 1, "latent": loss_latent.item()}
            if pixel_weight > 0 or feature_weight > 0:
                recon = generator.synthesize(pred, space)
                loss_pixel = (recon - images).pow(2).flatten(1).mean(1).mean()
                loss = loss + pixel_weight * loss_pixel
                record["pixel"] = loss_pixel.item()
                if feature_weight > 0:
                    loss_feature = feature_distance(classifier, recon, images).mean()
                    loss = loss + feature_weight * loss_feature
                    record["feature"] = loss_feature.item()
            if not math.isfinite(loss.item()):
                raise TlganError(
                    f"encoder training diverged at step {step + 1} (loss {loss.item()}); lower --lr"
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if (step + 1) % log_every == 0 or step + 1 == steps:
                history.append({k: round(v, 6) for k, v in record.items()})
                bar.set_postfix({k: f"{v:.4f}" for k, v in record.items() if k != "step"})
            if (step + 1) % checkpoint_every == 0 or step + 1 == steps:
                _save_checkpoint(ckpt_dir, encoder, opt, step + 1, settings, history)
    bar.close()
    encoder.eval()
    seconds = time.perf_counter() - t0
    evaluation = evaluate_encoder(encoder, generator, n=64, seed=seed + 1000)
    summary = {
        "steps": steps,
        "resumed_from": start_step,
        "seconds": round(seconds, 2),
        "final": history[-1] if history else {},
        "eval": evaluation,
    }
    save_encoder(
        encoder,
        out_dir,
        generator=generator,
        generator_spec=generator_spec,
        extra={"training": {**settings, "summary": summary}},
    )
    write_json(
        out_dir / "encoder-training.json", {"settings": settings, "summary": summary, "history": history}
    )
    log.info("encoder saved to %s (fresh-face PSNR %.2f dB)", out_dir, evaluation["psnr_db_mean"])
    return summary


@torch.no_grad()
def _w_statistics(generator: Generator, seed: int, n: int = 1024) -> tuple[torch.Tensor, float]:
    """The centre of ``generator``'s w (its tracked ``w_avg`` when it has one, else the mean over ``n``
    samples of seed ``seed + 2000``) and the mean square of w - centre over those samples."""
    w = generator.sample_latents(n, seed=seed + 2000, space="w")
    tracked = getattr(generator, "w_avg", None)
    centre = (
        tracked.detach().float().cpu()
        if isinstance(tracked, torch.Tensor) and tracked.abs().sum() > 0
        else w.mean(dim=0)
    )
    return centre, max(float((w - centre).pow(2).mean()), 1e-8)


def _reset(seed: int):
    """Initialise weights from a generator seeded by ``seed`` (independent of global RNG use elsewhere)."""
    g = torch.Generator().manual_seed(seed)

    def init(m: nn.Module) -> None:
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            fan_in = m.weight[0].numel()
            with torch.no_grad():
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * math.sqrt(2.0 / fan_in))
                if m.bias is not None:
                    m.bias.zero_()

    return init


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
