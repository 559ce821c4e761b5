"""The fixed mapping network of ``toyfaces-style``: z (N, 512) -> w (N, 512), and the linear
read-out that turns w into the toyfaces world's latent.

The 8 hidden layers' weights are drawn at construction from a documented seed (no file); the
output layer, a whitening fitted once on seeded samples, is stored in a small safetensors file
that :func:`calibrate` reproduces. Every run builds the same network.

Mapping network (StyleGAN's shape)
    ``z`` is normalised to unit second moment (``z / sqrt(mean(z^2) + 1e-8)``, StyleGAN's
    pixel norm), then passes through :data:`MAPPING_LAYERS` = 8 fully connected layers of
    width 512, each followed by a leaky ReLU of slope 0.2. Layer l's weight is
    ``GAIN * Q_l`` where ``Q_l`` is the Q factor (float64 ``numpy.linalg.qr``, column signs
    fixed so that R has a positive diagonal) of the l-th 512x512 standard-normal matrix drawn
    by ``numpy.random.default_rng(MAPPING_SEED)`` (MAPPING_SEED = 20_191_212), and
    ``GAIN = sqrt(2 / (1 + 0.2^2))`` keeps the variance of a leaky-ReLU layer; biases are 0.
    Even so, the 8th layer's output h is strongly anisotropic (covariance eigenvalues from
    0.004 to 2.6), as a trained StyleGAN's w is.

Output layer (calibrated, stored)
    A ninth, affine layer makes w white about its mean: ``w = R (h - h_avg) + h_avg`` for the
    8th layer's output h. ``CALIBRATION_SAMPLES`` = 16,384 latents z drawn (float64) by
    ``numpy.random.default_rng(CALIBRATION_SEED)`` (CALIBRATION_SEED = 20_191_213) are mapped
    in float64 through the 8 layers; ``h_avg`` is their mean, ``S`` their covariance and
    ``R = S^(-1/2)`` the symmetric whitening. So ``w_avg = h_avg`` and w - w_avg has about
    identity covariance (16,384 samples for 512 dimensions leave its eigenvalues within about
    0.7..1.4 on fresh samples). Recomputing R costs about 12 s of float64 work, so it is stored,
    in float32, in ``tlgan/models/weights/toyfaces-style/mapping.safetensors`` (keys ``w_avg``
    (512,), ``readout`` (512, 512)); :func:`calibrate` recomputes it from the seeds and a test
    checks the file against it. The 8 FC layers are never stored.

    The world's latent is ``u = w - w_avg``: attribute a's score is ``s_a = w_a . u + b_a``
    (``w_a``, ``b_a`` from :mod:`tlgan.toyfaces.world`), an affine function of w, and the true
    axis of a in w is exactly ``w_a``. Since ``u`` is white, the world's designed frequencies
    and correlations hold (u is close to, not exactly, normal: on 20,000 samples every frequency
    is within 0.011 of the design).

    A trained StyleGAN's w is anisotropic; this one is white on purpose, so an edit along a
    true axis moves the other attributes only as much as the world's design says.

Why z is non-linear
    Each leaky ReLU keeps about 86 % of a Gaussian input's variance in its linear part; after 8
    layers the best linear function of z explains only R^2 = 0.24..0.29 of an attribute score's
    variance (``|E[grad_z s]|^2 / Var(s)``, ``true_axes(space="z").info["r2"]``; in-sample fits on
    8,192 samples, :func:`tlgan.toyfaces.style_eval.linear_z_quality`, read 0.29..0.35). So the
    attributes are non-linear functions of z and exactly linear in w, which is InterFaceGAN's
    picture of StyleGAN.
"""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from tlgan.errors import TlganError
from tlgan.toyfaces import world

Z_DIM = world.Z_DIM
W_DIM = world.Z_DIM
MAPPING_LAYERS = 8
MAPPING_SEED = 20_191_212
CALIBRATION_SEED = 20_191_213
CALIBRATION_SAMPLES = 16_384
LRELU_SLOPE = 0.2
GAIN = math.sqrt(2.0 / (1.0 + LRELU_SLOPE**2))


def _orthogonal(gaussian: np.ndarray) -> np.ndarray:
    q, r = np.linalg.qr(gaussian)
    return q * np.sign(np.diag(r))[None, :]


@lru_cache(maxsize=1)
def mapping_weights64() -> tuple[np.ndarray, ...]:
    """The 8 layer weights, each (512, 512) float64 (``out x in``; ``y = lrelu(x @ W.T)``)."""
    rng = np.random.default_rng(MAPPING_SEED)
    return tuple(GAIN * _orthogonal(rng.standard_normal((W_DIM, Z_DIM))) for _ in range(MAPPING_LAYERS))


def _lrelu(x):
    return np.where(x >= 0, x, LRELU_SLOPE * x)


def map64(z: np.ndarray) -> np.ndarray:
    """The mapping in float64 NumPy: z (N, 512) -> w (N, 512)."""
    x = z / np.sqrt(np.mean(z * z, axis=1, keepdims=True) + 1e-8)
    for weight in mapping_weights64():
        x = _lrelu(x @ weight.T)
    return x


CALIBRATION_FILE = (
    Path(__file__).resolve().parents[1] / "models" / "weights" / "toyfaces-style" / "mapping.safetensors"
)


def calibrate() -> tuple[np.ndarray, np.ndarray]:
    """(h_avg (512,), R (512, 512)) in float64, recomputed from the seeds (about 12 s)."""
    z = np.random.default_rng(CALIBRATION_SEED).standard_normal((CALIBRATION_SAMPLES, Z_DIM))
    h = map64(z)
    h_avg = h.mean(axis=0)
    centred = h - h_avg
    cov = centred.T @ centred / (len(h) - 1)
    vals, vecs = np.linalg.eigh(cov)
    return h_avg, (vecs / np.sqrt(vals)[None, :]) @ vecs.T


def write_calibration(path: Path = CALIBRATION_FILE) -> Path:
    """Store :func:`calibrate`'s result in float32 as ``w_avg`` and ``readout`` (safetensors)."""
    from safetensors.numpy import save_file

    h_avg, readout = calibrate()
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "mapping_seed": str(MAPPING_SEED),
        "calibration_seed": str(CALIBRATION_SEED),
        "calibration_samples": str(CALIBRATION_SAMPLES),
        "doc": "tlgan.toyfaces.mapping: w = readout (h - w_avg) + w_avg after 8 seeded FC layers",
    }
    tensors = {"w_avg": h_avg.astype(np.float32), "readout": readout.astype(np.float32)}
    save_file(tensors, str(path), metadata=meta)
    return path


@lru_cache(maxsize=1)
def stored_calibration() -> tuple[np.ndarray, np.ndarray]:
    """(w_avg (512,), readout (512, 512)) float32 from :data:`CALIBRATION_FILE`."""
    from safetensors.numpy import load_file

    if not CALIBRATION_FILE.is_file():
        raise TlganError(
            f"the toyfaces-style output layer {CALIBRATION_FILE} is missing; reinstall tlgan, or "
            f"recreate it with tlgan.toyfaces.mapping.write_calibration()"
        )
    tensors = load_file(str(CALIBRATION_FILE))
    return tensors["w_avg"], tensors["readout"]


class MappingNetwork(torch.nn.Module):
    """z (N, 512) -> w (N, 512): pixel norm, 8 fixed FC layers with leaky ReLU, the whitening output layer.

    See the module docs. With ``whiten=False`` the output layer is left out and w is the 8th
    layer's anisotropic output h (``toyfaces-style-aniso``). All weights are fixed (float32,
    ``requires_grad`` off); gradients flow to the input.
    """

    def __init__(self, whiten: bool = True):
        super().__init__()
        self.whiten = bool(whiten)
        self.z_dim, self.w_dim, self.num_layers = Z_DIM, W_DIM, MAPPING_LAYERS
        self.layers = torch.nn.ModuleList()
        for weight in mapping_weights64():
            fc = torch.nn.Linear(Z_DIM, W_DIM, bias=False)
            fc.weight.data.copy_(torch.from_numpy(weight.astype(np.float32)))
            fc.weight.requires_grad_(False)
            self.layers.append(fc)
        w_avg, readout = stored_calibration()
        self.register_buffer("w_avg", torch.from_numpy(w_avg.copy()))
        self.register_buffer("readout", torch.from_numpy(readout.copy()))

    def hidden(self, z: torch.Tensor) -> torch.Tensor:
        """The 8th layer's output h (N, 512), before the output layer."""
        assert z.ndim == 2 and z.shape[1] == self.z_dim, f"z must be (N, {self.z_dim}), got {tuple(z.shape)}"
        x = z * torch.rsqrt(z.square().mean(dim=1, keepdim=True) + 1e-8)
        for fc in self.layers:
            x = torch.nn.functional.leaky_relu(fc(x), LRELU_SLOPE)
        return x

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.hidden(z)
        if not self.whiten:
            return h
        w_avg = self.w_avg.to(h.dtype)
        return (h - w_avg) @ self.readout.to(h.dtype).T + w_avg
