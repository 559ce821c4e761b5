"""Distilling a generator from a teacher generator: regression on the teacher's own latents.

When the teacher is an analytic generator (``toyfaces-render``), every latent has one right
image, so a network can be fitted to it directly: for each step, draw latents, ask the teacher
for its images, and pull the student's images towards them with an L1 pixel loss plus a
feature loss on a classifier's hidden layers (which keeps the attribute cues sharp where a
pixel loss alone would blur them). The student shares the teacher's latent space, so the
teacher's true axes stay meaningful for it.

The student is a DCGAN (``arch="dcgan"``) or a StyleGAN2 (``arch="stylegan2"``: the teacher's z
goes through the student's own mapping network, so the student gains w and wp spaces while its
z still means what the teacher's z means); a DCGAN upsamples with transposed convs
(``upsample="transpose"``, the bundled ``toyfaces-gan``) or with nearest-neighbour resizing and
3x3 convs (``"nearest"``). An optional edge term (``edge_weight``: L1 between the horizontal and
vertical pixel differences) pays for hard edges in the right place, which a pixel loss alone
trades for blur; a Laplacian term (``laplacian_weight``: L1 between the images' 4-neighbour
Laplacians) pays for the second difference, which is what a one-pixel step has and blur lacks.

With ``adversarial`` > 0 a patch discriminator (:class:`~tlgan.models.patchgan.PatchDiscriminator`,
spectral norm, hinge loss) joins in, as image-to-image networks are trained (pix2pix): each
student latent has its teacher image, so the pixel and feature losses fix what goes where and
the critic, which sees only local patches of teacher and student images, pays for the teacher's
hard edges and clean flat regions that a regression loss alone averages into blur and speckle.
The generator's loss becomes distillation + ``adversarial`` x (- mean patch logit of its
images), after ``d_warmup`` steps in which the critic learns alone: an untrained critic's
gradients are noise that the generator would learn as high-frequency texture. ``init`` starts the student from trained weights (fine-tuning, e.g. the bundled
``toyfaces-gan``). It still needs a teacher, not an image folder: `tlgan train generator` is
the GAN trainer for image folders.
"""

from __future__ import annotations

import copy
import logging
import os
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from tlgan.errors import TlganError
from tlgan.imaging import save_grid
from tlgan.models.base import Classifier, Generator
from tlgan.models.networks import DCGANGenerator, save_pretrained
from tlgan.models.patchgan import PatchDiscriminator
from tlgan.train.checkpoint import has_checkpoint, restore_checkpoint, save_checkpoint
from tlgan.train.common import (
    command_line,
    cosine_lr,
    resolve_device,
    set_lr,
    settings_mismatch,
    step_generator,
)
from tlgan.train.stylegan2 import training_images

log = logging.getLogger(__name__)

STREAM_DISTILL = 11


ARCHS = ("dcgan", "stylegan2")


# Settings that checkpoints written before the StyleGAN2 student existed do not record, with
# the values those checkpoints were trained with.
INTRODUCED_SETTINGS = {
    "arch": "dcgan",
    "arch_kwargs": {},
    "edge_weight": 0.0,
    "adversarial": 0.0,
    "d_width": None,
    "d_depth": None,
    "d_lr": None,
    "d_warmup": None,
    "init": None,
    "upsample": "transpose",
    "laplacian_weight": 0.0,
}


def make_student(
    arch: str,
    z_dim: int,
    resolution: int,
    width: int = 32,
    arch_kwargs: dict[str, Any] | None = None,
    upsample: str = "transpose",
) -> Generator:
    """An untrained student generator of ``arch`` for ``z_dim`` latents and ``resolution`` px images.

    ``width`` and ``upsample`` ("transpose" or "nearest") shape a DCGAN; ``arch_kwargs`` are
    StyleGAN2Generator arguments (``channel_base``, ``channel_max``, ``w_dim``,
    ``mapping_layers``, ...). Raises TlganError for an option the architecture does not take.
    """
    if arch == "dcgan":
        if arch_kwargs:
            raise TlganError(
                f"arch_kwargs {sorted(arch_kwargs)} apply to --arch stylegan2; a DCGAN takes --width"
            )
        return DCGANGenerator(z_dim=z_dim, resolution=resolution, width=width, upsample=upsample)
    if upsample != "transpose":
        raise TlganError(f"--upsample applies to --arch dcgan, not to {arch}; leave it out")
    if arch == "stylegan2":
        from tlgan.models.stylegan2 import StyleGAN2Generator

        return StyleGAN2Generator(z_dim=z_dim, img_resolution=resolution, **(arch_kwargs or {}))
    raise TlganError(f"unknown architecture {arch!r}; choose from {', '.join(ARCHS)}")


def edge_l1(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """L1 between the images' horizontal and vertical neighbour differences (edges)."""
    dx = lambda x: x[..., :, 1:] - x[..., :, :-1]  # noqa: E731
    dy = lambda x: x[..., 1:, :] - x[..., :-1, :]  # noqa: E731
    return 0.5 * (F.l1_loss(dx(student), dx(teacher)) + F.l1_loss(dy(student), dy(teacher)))


def laplacian_l1(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """L1 between the images' 4-neighbour Laplacians (each channel, valid region), (N, C, H, W) -> ()."""

    def lap(x):
        centre = x[..., 1:-1, 1:-1]
        return x[..., :-2, 1:-1] + x[..., 2:, 1:-1] + x[..., 1:-1, :-2] + x[..., 1:-1, 2:] - 4 * centre

    return F.l1_loss(lap(student), lap(teacher))


def distillation_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    classifier: Classifier | None,
    feature_weight: float,
    edge_weight: float = 0.0,
    laplacian_weight: float = 0.0,
) -> torch.Tensor:
    """L1 on pixels, plus ``edge_weight`` x :func:`edge_l1`, plus ``laplacian_weight`` x
    :func:`laplacian_l1`, plus ``feature_weight`` x mean squared error of the classifier's block
    outputs. Images (N, 3, R, R) in [-1, 1]; returns a scalar."""
    loss = F.l1_loss(student, teacher)
    if edge_weight > 0:
        loss = loss + edge_weight * edge_l1(student, teacher)
    if laplacian_weight > 0:
        loss = loss + laplacian_weight * laplacian_l1(student, teacher)
    if classifier is not None and feature_weight > 0:
        with torch.no_grad():
            targets = classifier.features(teacher)
        for got, want in zip(classifier.features(student), targets, strict=True):
            loss = loss + feature_weight * F.mse_loss(got, want)
    return loss


def hinge_d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Hinge loss of a (patch) critic: mean relu(1 - real) + mean relu(1 + fake), over every logit."""
    return F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()


def start_from(student: Generator, init: Generator) -> None:
    """Copy ``init``'s weights into ``student`` (same class and constructor arguments), in place.

    Raises TlganError naming the difference when the two networks are not the same shape.
    """
    want = (type(student).__name__, getattr(student, "config_kwargs", None))
    got = (type(init).__name__, getattr(init, "config_kwargs", None))
    if want != got:
        raise TlganError(
            f"--init is a {got[0]} {got[1]}, but this run trains a {want[0]} {want[1]}; "
            f"pass the --arch/--width that --init was trained with"
        )
    student.load_state_dict(init.state_dict(), strict=True)


def distill_generator(
    teacher: Generator,
    out_dir: str | os.PathLike,
    *,
    steps: int,
    batch_size: int = 64,
    lr: float = 2e-3,
    width: int = 32,
    classifier: Classifier | None = None,
    feature_weight: float = 0.1,
    ema_decay: float = 0.995,
    seed: int = 0,
    device: str = "cpu",
    checkpoint_every: int = 250,
    sample_every: int = 500,
    resume: bool = False,
    name: str = "distilled",
    progress: bool = True,
    teacher_spec: str | None = None,
    classifier_spec: str | None = None,
    arch: str = "dcgan",
    arch_kwargs: dict[str, Any] | None = None,
    edge_weight: float = 0.0,
    adversarial: float = 0.0,
    d_width: int = 32,
    d_depth: int = 3,
    d_lr: float | None = None,
    d_warmup: int = 0,
    init: Generator | None = None,
    init_spec: str | None = None,
    command: str | None = None,
    upsample: str = "transpose",
    laplacian_weight: float = 0.0,
) -> dict[str, Any]:
    """Fit a student of ``arch`` (see :func:`make_student`) to ``teacher`` and save it to ``out_dir``
    (model.json + .safetensors): the EMA of its weights, or the raw weights if those are closer.

    ``adversarial`` > 0 adds a PatchDiscriminator (``d_width`` channels, ``d_depth`` strided
    convs, Adam at ``d_lr``, default ``lr``) and, from step ``d_warmup`` on, that weight times its
    hinge generator loss;
    ``init`` (a generator of the student's class and size) gives the starting weights.
    ``upsample`` is the DCGAN student's upsampling; ``edge_weight`` and ``laplacian_weight``
    weigh :func:`edge_l1` and :func:`laplacian_l1` (see :func:`distillation_loss`).
    Latents of step k depend only on (seed, k), so a resumed run equals an uninterrupted one
    (the critic and its optimizer are in the checkpoints). ``command`` (default: this process's
    command line) is recorded in model.json.
    Returns {"out_dir", "steps", "loss" (running average), "seconds_per_step", "samples"}
    (plus "d_loss", the critic's running average, when adversarial).
    """
    dev = resolve_device(device)
    out_dir = Path(out_dir)
    for label, value in (
        ("steps", steps),
        ("batch_size", batch_size),
        ("checkpoint_every", checkpoint_every),
        ("sample_every", sample_every),
    ):
        if value < 1:
            raise TlganError(f"{label} must be at least 1, not {value}")
    if adversarial < 0:
        raise TlganError(f"adversarial must be 0 (off) or a positive weight, not {adversarial}")
    if edge_weight < 0 or laplacian_weight < 0:
        raise TlganError(
            f"edge_weight and laplacian_weight must be 0 (off) or positive, not {edge_weight}, {laplacian_weight}"
        )
    if d_warmup < 0:
        raise TlganError(f"d_warmup is a number of steps, 0 or more, not {d_warmup}")
    if not resume and has_checkpoint(out_dir):
        raise TlganError(
            f"{out_dir} already holds a training checkpoint; pass --resume to continue it, "
            f"or choose another --out folder"
        )
    teacher = teacher.to(dev).eval().requires_grad_(False)
    if classifier is not None:
        classifier = classifier.to(dev).eval().requires_grad_(False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        G = make_student(arch, teacher.z_dim, teacher.img_resolution, width, arch_kwargs, upsample)
    if init is not None:
        start_from(G, init)
    G.name = name
    G.to(dev).train()
    G_ema = copy.deepcopy(G).eval().requires_grad_(False)
    opt = torch.optim.Adam(G.parameters(), lr=lr, betas=(0.9, 0.99))
    modules, optimizers = {"G": G, "G_ema": G_ema}, {"G": opt}
    D = opt_D = None
    if adversarial > 0:
        d_lr = lr if d_lr is None else d_lr
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + 1)
            D = PatchDiscriminator(teacher.img_resolution, width=d_width, depth=d_depth).to(dev).train()
        # beta1 0.5 as GAN critics are usually trained: momentum lags a moving target.
        opt_D = torch.optim.Adam(D.parameters(), lr=d_lr, betas=(0.5, 0.99))
        modules["D"], optimizers["D"] = D, opt_D
    settings = {
        "teacher": teacher_spec or teacher.name,
        "classifier": classifier_spec,
        "batch_size": batch_size,
        "lr": lr,
        "width": width,
        "feature_weight": feature_weight,
        "ema_decay": ema_decay,
        "seed": seed,
        "steps": steps,
        "arch": arch,
        "arch_kwargs": dict(arch_kwargs or {}),
        "edge_weight": edge_weight,
        "adversarial": adversarial,
        "d_width": d_width if adversarial > 0 else None,
        "d_depth": d_depth if adversarial > 0 else None,
        "d_lr": d_lr if adversarial > 0 else None,
        "d_warmup": d_warmup if adversarial > 0 else None,
        "init": (init_spec or init.name) if init is not None else None,
        "upsample": upsample,
        "laplacian_weight": laplacian_weight,
    }
    start, avg, d_avg = 0, None, None
    if resume and has_checkpoint(out_dir):
        manifest = restore_checkpoint(out_dir, modules=modules, optimizers=optimizers)
        diff = settings_mismatch(
            manifest["info"].get("settings", {}), settings, introduced=INTRODUCED_SETTINGS
        )
        if diff:
            raise TlganError(
                f"{out_dir}: cannot resume with other settings ({'; '.join(diff)}); pass the same ones"
            )
        start, avg = int(manifest["step"]), manifest["info"].get("loss")
        d_avg = manifest["info"].get("d_loss")

    grid_latents = teacher.sample_latents(32, seed=seed).to(dev)
    samples = []

    def write_samples(step: int) -> None:
        with torch.no_grad():
            images = torch.cat([teacher.synthesize(grid_latents[:16]), G_ema.synthesize(grid_latents[:16])])
        path = out_dir / "samples" / f"step-{step:06d}.png"
        save_grid(images, path, nrow=8, padding=2)  # top: teacher, bottom: student
        samples.append(str(path))

    def checkpoint(step: int) -> None:
        save_checkpoint(
            out_dir,
            step=step,
            modules=modules,
            optimizers=optimizers,
            info={"settings": settings, "loss": avg, "d_loss": d_avg, "kind": "distill"},
        )

    bar = tqdm(total=steps, initial=start, desc="distill", unit="step", disable=None if progress else True)
    seconds, ran = 0.0, 0
    for step in range(start, steps):
        t0 = time.perf_counter()
        z = torch.randn(batch_size, teacher.z_dim, generator=step_generator(seed, step, STREAM_DISTILL)).to(
            dev
        )
        with torch.no_grad():
            target = teacher.synthesize(z)
        set_lr(opt, cosine_lr(step, steps, lr, warmup=min(200, steps // 10), final_fraction=0.05))
        fake = training_images(G, z)
        loss = distillation_loss(fake, target, classifier, feature_weight, edge_weight, laplacian_weight)
        if D is not None:
            set_lr(opt_D, cosine_lr(step, steps, d_lr, warmup=min(200, steps // 10), final_fraction=0.05))
            D.requires_grad_(True)
            d_loss = hinge_d_loss(D(target), D(fake.detach()))
            opt_D.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_D.step()
            d_value = float(d_loss.detach())
            d_avg = d_value if d_avg is None else 0.98 * d_avg + 0.02 * d_value
            D.requires_grad_(False)
            if step >= d_warmup:
                loss = loss - adversarial * D(fake).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            for e, m in zip(G_ema.parameters(), G.parameters(), strict=True):
                e.lerp_(m, 1.0 - ema_decay)
            for e, m in zip(G_ema.buffers(), G.buffers(), strict=True):
                e.copy_(m)
        value = float(loss.detach())
        avg = value if avg is None else 0.98 * avg + 0.02 * value
        seconds += time.perf_counter() - t0
        ran += 1
        bar.set_postfix(loss=f"{avg:.4f}", **({"d_loss": f"{d_avg:.3f}"} if D is not None else {}))
        bar.update(1)
        if (step + 1) % sample_every == 0:
            write_samples(step + 1)
        if (step + 1) % checkpoint_every == 0 and step + 1 < steps:
            checkpoint(step + 1)
    bar.close()
    checkpoint(steps)
    if not samples or not samples[-1].endswith(f"step-{steps:06d}.png"):
        write_samples(steps)
    chosen, errors = pick_closest(teacher, {"G": G, "G_ema": G_ema}, grid_latents)
    final = {"G": G, "G_ema": G_ema}[chosen].eval()
    save_pretrained(
        final,
        out_dir,
        extra={
            "training": {
                **settings,
                "method": "distillation",
                "device": str(dev),
                "saved": chosen,
                "l1_to_teacher": errors,
                "command": command if command is not None else command_line(),
            }
        },
    )
    return {
        "out_dir": str(out_dir),
        "steps": steps,
        "loss": avg,
        "saved": chosen,
        "l1_to_teacher": errors,
        "seconds_per_step": seconds / ran if ran else None,
        "samples": samples,
        **({"d_loss": d_avg} if D is not None else {}),
    }


@torch.no_grad()
def pick_closest(teacher: Generator, candidates: dict[str, Generator], latents: torch.Tensor):
    """The candidate (in eval mode) whose images are closest to the teacher's in mean L1, and all errors.

    The weight average usually wins; early in a short run, before it has caught up, the raw
    weights can be closer, and saving those is the better choice.
    """
    target = teacher.synthesize(latents)
    errors = {}
    for key, model in candidates.items():
        model.eval()
        errors[key] = round(float(F.l1_loss(model.synthesize(latents), target)), 5)
    return min(errors, key=errors.get), errors
