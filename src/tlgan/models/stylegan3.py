"""StyleGAN3 (Karras et al., 2021, "Alias-Free Generative Adversarial Networks"), configs T and R,
in one file to read top to bottom.

    z (N, z_dim) --mapping--> w (N, w_dim) --broadcast, truncation--> wp (N, num_ws, w_dim) --synthesis--> image

The synthesis network treats every feature map as samples of a continuous signal and keeps
each layer's spectrum below its sampling rate's Nyquist limit, so the image moves with its
input rather than with the pixel grid:

- **Input** (wp layer 0): Fourier features sin(2 pi (f . x + phi)) with stored frequencies
  ``freqs`` (C, 2) inside a disc of radius f_c0 and phases ``phases`` (C,), sampled on a grid of
  ``sampling_rate`` samples per unit with ``margin_size`` extra samples on each side. An affine
  of w gives (r_c, r_s, t_x, t_y); normalised so that (r_c, r_s) is a unit vector, it is a
  rotation and a translation of the input plane, applied after the user's ``transform`` (3 x 3,
  NVlabs' convention: the inverse of the wanted image transform). A trained C x C matrix then
  mixes the features. Frequencies that the transform pushes beyond the band are faded out.
- **Layers** L0 .. L{num_layers - 1} (wp layers 1 ..): a modulated convolution (3 x 3 in T,
  1 x 1 in R), whose input is divided by the root of ``magnitude_ema`` (the running mean square
  of the layer's input in training), then the *filtered leaky ReLU*: add the bias, upsample by
  ``up_factor`` with the low-pass ``up_filter``, leaky ReLU times sqrt(2), clamp to
  ``conv_clamp``, low-pass with ``down_filter`` and keep every ``down_factor``-th sample. The
  nonlinearity runs at twice the layer's sampling rate so that the harmonics it creates are
  removed before the samples are thinned. The cutoffs f_c grow geometrically from
  ``first_cutoff`` to R/2 over the layers; the last ``num_critical`` layers are critically
  sampled (cutoff at Nyquist, image size without margin).
- **toRGB** (the last wp layer): a modulated 1 x 1 convolution without demodulation, bias and
  clamp; no filters, no activation. The image is finally scaled by ``output_scale``.
- **Config R** uses 1 x 1 convolutions and radially symmetric (jinc) down-filters in the layers
  that are not critically sampled, which makes the network equivariant to rotation too.

There is no per-pixel noise. The filters are designed from the layer's frequencies at
construction (Kaiser-windowed sinc, or jinc for R) and are buffers, so a checkpoint's own
filters are what the network runs. Parameter and buffer names follow NVlabs' state layout
(``synthesis.input.freqs``, ``synthesis.L3_52_512.up_filter``, ``mapping.fc1.weight``, ...).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tlgan.errors import TlganError
from tlgan.models.style_based import StyleBasedGenerator
from tlgan.models.stylegan2 import LRELU_GAIN, LRELU_SLOPE, FullyConnected, MappingNetwork


def design_lowpass(
    numtaps: int, cutoff: float, width: float, fs: float, radial: bool = False
) -> torch.Tensor | None:
    """A Kaiser-windowed low-pass FIR filter with ``numtaps`` taps, sum 1; None for one tap (identity).

    Separable (1-D, (numtaps,)): the windowed sinc of ``cutoff`` at sampling rate ``fs`` with
    transition band ``width`` (the window's beta follows Kaiser's formulas for that band).
    ``radial`` (2-D, (numtaps, numtaps)): the windowed jinc, J1(2 pi f_c r) / (pi r), the
    circularly symmetric ideal low-pass, with the 1-D window's outer product.
    """
    import scipy.signal
    import scipy.special

    if numtaps <= 1:
        return None
    if not radial:
        taps = scipy.signal.firwin(numtaps=numtaps, cutoff=cutoff, width=width, fs=fs)
        return torch.as_tensor(taps, dtype=torch.float32)
    x = (np.arange(numtaps) - (numtaps - 1) / 2) / fs
    r = np.hypot(*np.meshgrid(x, x))
    with np.errstate(invalid="ignore", divide="ignore"):
        f = scipy.special.j1(2 * cutoff * np.pi * r) / (np.pi * r)
    f[r == 0] = cutoff  # the limit of the jinc at its centre (odd numtaps only)
    beta = scipy.signal.kaiser_beta(scipy.signal.kaiser_atten(numtaps, width / (fs / 2)))
    window = np.kaiser(numtaps, beta)
    f = f * np.outer(window, window)
    return torch.as_tensor(f / f.sum(), dtype=torch.float32)


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    # Per-channel convolutions run several times faster on a CPU with channels last in memory.
    return x.contiguous(memory_format=torch.channels_last)


def _depthwise_kernel(taps: torch.Tensor, axis: int, channels: int, dtype: torch.dtype) -> torch.Tensor:
    k = taps.to(dtype).reshape(1, 1, 1, -1) if axis == 3 else taps.to(dtype).reshape(1, 1, -1, 1)
    return _channels_last(k.expand(channels, 1, *k.shape[2:]))


def _upsample_axis(
    x: torch.Tensor, taps: torch.Tensor, axis: int, up: int, pad: Sequence[int]
) -> torch.Tensor:
    """Along ``axis`` (2 = H, 3 = W) of (N, C, H, W): insert up - 1 zeros after every sample, pad by
    ``pad`` (before, after; negative crops) and convolve every channel with ``taps`` times ``up``
    ("valid": L up + before + after - K + 1 samples out).

    Computed as a transposed convolution with stride ``up``, which skips the inserted zeros: it
    gives the full convolution of the zero-stuffed signal, of which the padded valid
    convolution is the window starting K - 1 - before (zeros outside it).
    """
    length, k = x.shape[axis], taps.shape[0]
    stride = (1, up) if axis == 3 else (up, 1)
    kernel = _depthwise_kernel(taps * up, axis, x.shape[1], x.dtype)
    full = F.conv_transpose2d(_channels_last(x), kernel, stride=stride, groups=x.shape[1])
    start = k - 1 - int(pad[0])
    out_length = length * up + int(pad[0]) + int(pad[1]) - k + 1
    extra = [-start, out_length - full.shape[axis] + start]
    return F.pad(full, extra + [0, 0] if axis == 3 else [0, 0] + extra)


def _downsample_axis(x: torch.Tensor, taps: torch.Tensor, axis: int, down: int) -> torch.Tensor:
    """Along ``axis`` of (N, C, H, W): convolve every channel with ``taps`` ("valid") and keep every
    ``down``-th sample from the first."""
    stride = (1, down) if axis == 3 else (down, 1)
    kernel = _depthwise_kernel(taps.flip(0), axis, x.shape[1], x.dtype)
    return F.conv2d(_channels_last(x), kernel, stride=stride, groups=x.shape[1])


def filtered_lrelu(
    x: torch.Tensor,
    up_filter: torch.Tensor | None,
    down_filter: torch.Tensor | None,
    bias: torch.Tensor,
    up: int,
    down: int,
    padding: Sequence[int],
    gain: float = LRELU_GAIN,
    slope: float = LRELU_SLOPE,
    clamp: float | None = None,
) -> torch.Tensor:
    """Bias, upsample, leaky ReLU x gain, clamp, downsample: (N, C, H, W) -> (N, C, H', W').

    ``padding`` (left, right, top, bottom) applies to the upsampled signal before the
    up-filter; H' = (H up + top + bottom - (K_up - 1) - (K_down - 1) + down - 1) // down. The
    up-filter (separable, 1-D) is scaled by ``up`` per axis to keep the mean; the down-filter is
    1-D (separable) or 2-D (radial). None means one tap of 1 (no filtering). Filters are
    applied as convolutions (flipped), as the stored taps are meant.
    """
    x = x + bias[None, :, None, None].to(x.dtype)
    ones = x.new_ones(1)
    fu = ones if up_filter is None else up_filter
    x = _upsample_axis(x, fu, 3, up, padding[0:2])
    x = _upsample_axis(x, fu, 2, up, padding[2:4])
    x = (F.leaky_relu(x, slope) if slope != 1 else x) * gain
    if clamp is not None:
        x = x.clamp(-clamp, clamp)
    if down_filter is not None and down_filter.ndim == 2:
        k = _channels_last(down_filter.flip(0, 1).to(x.dtype)[None, None].expand(x.shape[1], 1, -1, -1))
        return F.conv2d(_channels_last(x), k, stride=down, groups=x.shape[1])
    fd = ones if down_filter is None else down_filter
    return _downsample_axis(_downsample_axis(x, fd, 3, down), fd, 2, down)


class SynthesisInput(nn.Module):
    """w (N, w_dim) -> Fourier features (N, channels, size, size), turned and moved by w and ``transform``."""

    def __init__(self, w_dim: int, channels: int, size: int, sampling_rate: float, bandwidth: float):
        super().__init__()
        self.channels, self.size = int(channels), int(size)
        self.sampling_rate, self.bandwidth = float(sampling_rate), float(bandwidth)
        # Frequencies spread over the disc of radius `bandwidth`, phases uniform in [-1/2, 1/2).
        freqs = torch.randn(self.channels, 2)
        radii = freqs.norm(dim=1, keepdim=True)
        freqs = freqs / (radii * radii.square().exp().pow(0.25)) * self.bandwidth
        self.weight = nn.Parameter(torch.randn(self.channels, self.channels))
        self.affine = FullyConnected(w_dim, 4)
        with torch.no_grad():  # starts as the identity transform: (r_c, r_s, t_x, t_y) = (1, 0, 0, 0)
            self.affine.weight.zero_()
            self.affine.bias.copy_(torch.tensor([1.0, 0.0, 0.0, 0.0]))
        self.register_buffer("transform", torch.eye(3))
        self.register_buffer("freqs", freqs)
        self.register_buffer("phases", torch.rand(self.channels) - 0.5)
        # Sample positions in input units: pixel i's centre at (i + 1/2 - size/2) / sampling_rate.
        grid = (torch.arange(self.size, dtype=torch.float64) + 0.5 - self.size / 2) / self.sampling_rate
        self.register_buffer("grid", grid.float(), persistent=False)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        n = w.shape[0]
        t = self.affine(w)  # (N, 4): r_c, r_s, t_x, t_y
        t = t / t[:, :2].norm(dim=1, keepdim=True)
        c, s, tx, ty = t.unbind(1)
        zero, one = torch.zeros_like(c), torch.ones_like(c)
        # The inverse rotation and translation of the image, then the user's (inverse) transform.
        rot = torch.stack([c, -s, zero, s, c, zero, zero, zero, one], 1).reshape(n, 3, 3)
        move = torch.stack([one, zero, -tx, zero, one, -ty, zero, zero, one], 1).reshape(n, 3, 3)
        m = rot @ move @ self.transform.to(w.dtype)[None]
        phases = self.phases[None] + (self.freqs[None] @ m[:, :2, 2:]).squeeze(2)  # (N, C)
        freqs = self.freqs[None] @ m[:, :2, :2]  # (N, C, 2)
        # Fade frequencies that the user's transform pushed out of band (a scaling transform can).
        nyquist = self.sampling_rate / 2
        amplitudes = (1 - (freqs.norm(dim=2) - self.bandwidth) / (nyquist - self.bandwidth)).clamp(0, 1)
        g = self.grid.to(w.dtype)
        arg = (
            g[None, None, :, None] * freqs[:, None, None, :, 0]  # x along the width
            + g[None, :, None, None] * freqs[:, None, None, :, 1]  # y along the height
            + phases[:, None, None, :]
        )  # (N, H, W, C)
        x = torch.sin(arg * (2 * math.pi)) * amplitudes[:, None, None, :]
        x = x @ (self.weight / math.sqrt(self.channels)).t()
        return x.permute(0, 3, 1, 2)


class SynthesisLayer(nn.Module):
    """Modulated convolution, then the filtered leaky ReLU (or, as toRGB, bias and clamp only).

    (N, in_channels, in_size, in_size) and w (N, w_dim) -> (N, out_channels, out_size, out_size).
    """

    def __init__(
        self,
        w_dim: int,
        is_torgb: bool,
        is_critically_sampled: bool,
        in_channels: int,
        out_channels: int,
        in_size: int,
        out_size: int,
        in_sampling_rate: int,
        out_sampling_rate: int,
        in_cutoff: float,
        out_cutoff: float,
        in_half_width: float,
        out_half_width: float,
        conv_kernel: int = 3,
        filter_size: int = 6,
        lrelu_upsampling: int = 2,
        use_radial_filters: bool = False,
        conv_clamp: float | None = 256,
    ):
        super().__init__()
        self.is_torgb = bool(is_torgb)
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.in_size, self.out_size = int(in_size), int(out_size)
        self.conv_kernel = 1 if is_torgb else int(conv_kernel)
        self.conv_clamp = conv_clamp
        self.affine = FullyConnected(w_dim, self.in_channels, bias_init=1.0)
        self.weight = nn.Parameter(
            torch.randn(self.out_channels, self.in_channels, self.conv_kernel, self.conv_kernel)
        )
        self.bias = nn.Parameter(torch.zeros(self.out_channels))
        self.register_buffer("magnitude_ema", torch.ones([]))
        # The nonlinearity runs at `lrelu_upsampling` times the higher of the two rates.
        tmp_rate = max(in_sampling_rate, out_sampling_rate) * (1 if is_torgb else lrelu_upsampling)
        self.up_factor = int(round(tmp_rate / in_sampling_rate))
        self.down_factor = int(round(tmp_rate / out_sampling_rate))
        if self.up_factor * in_sampling_rate != tmp_rate or self.down_factor * out_sampling_rate != tmp_rate:
            raise TlganError(
                f"sampling rates {in_sampling_rate} -> {out_sampling_rate} are not integer ratios of "
                f"{tmp_rate}; this StyleGAN3 configuration is not supported"
            )
        up_taps = filter_size * self.up_factor if self.up_factor > 1 and not is_torgb else 1
        down_taps = filter_size * self.down_factor if self.down_factor > 1 and not is_torgb else 1
        radial = bool(use_radial_filters) and not is_critically_sampled
        self.register_buffer("up_filter", design_lowpass(up_taps, in_cutoff, in_half_width * 2, tmp_rate))
        self.register_buffer(
            "down_filter", design_lowpass(down_taps, out_cutoff, out_half_width * 2, tmp_rate, radial)
        )
        # Padding so that output sample k sits at the same place as in the continuous signal
        # (the symmetric interpretation of sample positions, the paper's appendix C.3).
        total = (self.out_size - 1) * self.down_factor + 1
        total -= (self.in_size + self.conv_kernel - 1) * self.up_factor
        total += up_taps + down_taps - 2
        lo = (total + self.up_factor) // 2
        self.padding = [lo, total - lo, lo, total - lo]

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        styles = self.affine(w)  # (N, C_in)
        input_gain = self.magnitude_ema.rsqrt()
        if self.is_torgb:
            styles = styles / math.sqrt(self.in_channels * self.conv_kernel**2)
            x = F.conv2d(x * (styles * input_gain)[:, :, None, None].to(x.dtype), self.weight.to(x.dtype))
            x = x + self.bias[None, :, None, None].to(x.dtype)
            return x if self.conv_clamp is None else x.clamp(-self.conv_clamp, self.conv_clamp)
        # Weights and styles are first brought to unit root mean square, which the demodulation
        # would undo anyway; it keeps the sums below well scaled. Then demodulation: each output
        # channel divided by the norm of its modulated weights, sum_i s_i^2 sum_k W_oik^2, so the
        # per-sample (N, C_out, C_in, k, k) weights never exist.
        weight = self.weight * self.weight.square().mean(dim=(1, 2, 3), keepdim=True).rsqrt()
        styles = styles * styles.square().mean(dim=1, keepdim=True).rsqrt()
        dcoefs = (styles.square() @ weight.square().sum(dim=(2, 3)).t() + 1e-8).rsqrt()  # (N, C_out)
        x = x * (styles * input_gain)[:, :, None, None].to(x.dtype)
        x = F.conv2d(x, weight.to(x.dtype), padding=self.conv_kernel - 1)
        x = x * dcoefs[:, :, None, None].to(x.dtype)
        return filtered_lrelu(
            x,
            self.up_filter,
            self.down_filter,
            self.bias,
            self.up_factor,
            self.down_factor,
            self.padding,
            clamp=self.conv_clamp,
        )


def layer_schedule(
    img_resolution: int,
    img_channels: int,
    channel_base: int,
    channel_max: int,
    num_layers: int,
    num_critical: int,
    first_cutoff: float,
    first_stopband: float,
    last_stopband_rel: float,
    margin_size: int,
) -> dict[str, np.ndarray]:
    """Per layer 0 .. num_layers (the input, then every layer; the last is toRGB): cutoff f_c,
    sampling rate s, transition half-width f_h, size and channels, as (num_layers + 1,) arrays.

    f_c and f_t grow geometrically from the first layer's to the last's and stay there for the
    last ``num_critical`` layers; s is the smallest power of two >= 2 f_t (at most the image
    resolution); f_h = max(f_t, s / 2) - f_c; channels are channel_base / 2 / f_c, at most
    ``channel_max``.
    """
    last_cutoff = img_resolution / 2
    last_stopband = last_cutoff * last_stopband_rel
    exponents = np.minimum(np.arange(num_layers + 1) / (num_layers - num_critical), 1)
    cutoffs = first_cutoff * (last_cutoff / first_cutoff) ** exponents
    stopbands = first_stopband * (last_stopband / first_stopband) ** exponents
    rates = np.exp2(np.ceil(np.log2(np.minimum(stopbands * 2, img_resolution))))
    half_widths = np.maximum(stopbands, rates / 2) - cutoffs
    sizes = rates + margin_size * 2
    sizes[-2:] = img_resolution
    channels = np.rint(np.minimum((channel_base / 2) / cutoffs, channel_max))
    channels[-1] = img_channels
    return dict(cutoffs=cutoffs, rates=rates, half_widths=half_widths, sizes=sizes, channels=channels)


class SynthesisNetwork(nn.Module):
    """wp (N, num_ws, w_dim) -> images (N, img_channels, R, R), not clamped; num_ws = num_layers + 2."""

    def __init__(
        self,
        w_dim: int,
        img_resolution: int,
        img_channels: int = 3,
        channel_base: int = 32768,
        channel_max: int = 512,
        num_layers: int = 14,
        num_critical: int = 2,
        first_cutoff: float = 2.0,
        first_stopband: float = 2**2.1,
        last_stopband_rel: float = 2**0.3,
        margin_size: int = 10,
        output_scale: float = 0.25,
        **layer_kwargs: Any,
    ):
        super().__init__()
        self.num_ws = num_layers + 2
        self.output_scale = float(output_scale)
        sched = layer_schedule(
            img_resolution,
            img_channels,
            channel_base,
            channel_max,
            num_layers,
            num_critical,
            first_cutoff,
            first_stopband,
            last_stopband_rel,
            margin_size,
        )
        self.schedule = sched
        sizes, channels, rates = sched["sizes"], sched["channels"], sched["rates"]
        self.input = SynthesisInput(
            w_dim, int(channels[0]), int(sizes[0]), float(rates[0]), float(sched["cutoffs"][0])
        )
        self.layer_names: list[str] = []
        for idx in range(num_layers + 1):
            prev = max(idx - 1, 0)
            layer = SynthesisLayer(
                w_dim=w_dim,
                is_torgb=idx == num_layers,
                is_critically_sampled=idx >= num_layers - num_critical,
                in_channels=int(channels[prev]),
                out_channels=int(channels[idx]),
                in_size=int(sizes[prev]),
                out_size=int(sizes[idx]),
                in_sampling_rate=int(rates[prev]),
                out_sampling_rate=int(rates[idx]),
                in_cutoff=float(sched["cutoffs"][prev]),
                out_cutoff=float(sched["cutoffs"][idx]),
                in_half_width=float(sched["half_widths"][prev]),
                out_half_width=float(sched["half_widths"][idx]),
                **layer_kwargs,
            )
            name = f"L{idx}_{layer.out_size}_{layer.out_channels}"
            setattr(self, name, layer)
            self.layer_names.append(name)

    def layers(self) -> list[SynthesisLayer]:
        """L0, L1, ..., toRGB: layer k takes w number k + 1 of wp."""
        return [getattr(self, name) for name in self.layer_names]

    def forward(self, ws: torch.Tensor) -> torch.Tensor:
        x = self.input(ws[:, 0])
        for k, layer in enumerate(self.layers()):
            x = layer(x, ws[:, k + 1])
        return x * self.output_scale if self.output_scale != 1 else x


def input_transform(rotate: float = 0.0, translate: Sequence[float] = (0.0, 0.0)) -> torch.Tensor:
    """The 3 x 3 ``input_transform`` that turns the image by ``rotate`` degrees and moves it by
    ``translate`` (x right, y down) in input units, where the image spans one unit (a move of
    k / R is k pixels at resolution R).

    Returns the inverse of that image transform, as NVlabs' tools store it in
    ``synthesis.input.transform`` (so ``rotate``/``translate`` mean what their ``--rotate`` and
    ``--translate`` mean).
    """
    if len(translate) != 2:
        raise TlganError(f"translate takes two numbers (x, y), not {list(translate)}")
    a = math.radians(float(rotate))
    c, s = math.cos(a), math.sin(a)
    tx, ty = float(translate[0]), float(translate[1])
    forward = torch.tensor([[c, s, tx], [-s, c, ty], [0.0, 0.0, 1.0]], dtype=torch.float64)
    return torch.linalg.inv(forward).float()


CONFIGS: dict[str, dict[str, Any]] = {
    "t": {"conv_kernel": 3, "use_radial_filters": False},
    "r": {"conv_kernel": 1, "use_radial_filters": True},
}
"""The two published configurations' layer settings (R also doubles channel_base and channel_max)."""


class StyleGAN3Generator(StyleBasedGenerator):
    """The StyleGAN3 generator (T or R), unconditional, as a tlgan :class:`Generator` with spaces z, w and wp.

    ``synthesize(latents, space)`` takes z (N, z_dim), w (N, w_dim) or wp (N, num_ws, w_dim) and
    returns images (N, 3, R, R) clamped to [-1, 1]; :meth:`synthesize_raw` gives them unclamped
    from wp. ``configure`` sets truncation (see :mod:`tlgan.models.style_based`) and the
    ``input_transform`` (3 x 3, NVlabs' convention; :func:`input_transform` builds one from an
    angle and a move). Deterministic: there is no noise.
    """

    family = "StyleGAN3"

    def __init__(
        self,
        z_dim: int = 512,
        w_dim: int = 512,
        img_resolution: int = 1024,
        img_channels: int = 3,
        channel_base: int = 32768,
        channel_max: int = 512,
        num_layers: int = 14,
        num_critical: int = 2,
        first_cutoff: float = 2.0,
        first_stopband: float = 2**2.1,
        last_stopband_rel: float = 2**0.3,
        margin_size: int = 10,
        output_scale: float = 0.25,
        conv_kernel: int = 3,
        filter_size: int = 6,
        lrelu_upsampling: int = 2,
        use_radial_filters: bool = False,
        conv_clamp: float | None = 256.0,
        mapping_layers: int = 2,
        mapping_lr: float = 0.01,
    ):
        super().__init__()
        img_resolution = int(img_resolution)
        if img_resolution < 8 or img_resolution & (img_resolution - 1):
            raise TlganError(f"a StyleGAN3 resolution must be a power of two >= 8, not {img_resolution}")
        if not 0 <= int(num_critical) < int(num_layers):
            raise TlganError(
                f"num_critical must be 0..{int(num_layers) - 1} (below num_layers), not {num_critical}"
            )
        self.config_kwargs: dict[str, Any] = {
            "z_dim": int(z_dim),
            "w_dim": int(w_dim),
            "img_resolution": img_resolution,
            "img_channels": int(img_channels),
            "channel_base": int(channel_base),
            "channel_max": int(channel_max),
            "num_layers": int(num_layers),
            "num_critical": int(num_critical),
            "first_cutoff": float(first_cutoff),
            "first_stopband": float(first_stopband),
            "last_stopband_rel": float(last_stopband_rel),
            "margin_size": int(margin_size),
            "output_scale": float(output_scale),
            "conv_kernel": int(conv_kernel),
            "filter_size": int(filter_size),
            "lrelu_upsampling": int(lrelu_upsampling),
            "use_radial_filters": bool(use_radial_filters),
            "conv_clamp": None if conv_clamp is None else float(conv_clamp),
            "mapping_layers": int(mapping_layers),
            "mapping_lr": float(mapping_lr),
        }
        c = self.config_kwargs
        positive = ("z_dim", "w_dim", "channel_base", "channel_max", "mapping_layers", "conv_kernel")
        for key in positive + ("filter_size", "lrelu_upsampling"):
            if c[key] < 1:
                raise TlganError(f"{key} must be a positive integer, not {c[key]}")
        self.name = "stylegan3-r" if c["use_radial_filters"] else "stylegan3-t"
        self.z_dim, self.w_dim = c["z_dim"], c["w_dim"]
        self.img_resolution, self.img_channels = img_resolution, c["img_channels"]
        mapping_keys = ("z_dim", "w_dim", "mapping_layers", "mapping_lr")
        self.synthesis = SynthesisNetwork(self.w_dim, **{k: v for k, v in c.items() if k not in mapping_keys})
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(self.z_dim, self.w_dim, c["mapping_layers"], c["mapping_lr"])
        self._init_style_options()

    @property
    def w_avg(self) -> torch.Tensor:
        return self.mapping.w_avg

    # -- options ------------------------------------------------------------------------------

    @property
    def options(self) -> dict[str, Any]:
        out = {k: v for k, v in super().options.items() if k != "noise_mode"}
        transform = self.synthesis.input.transform
        if not torch.equal(transform, torch.eye(3, device=transform.device, dtype=transform.dtype)):
            out["input_transform"] = [[float(v) for v in row] for row in transform.tolist()]
        return out

    def configure(
        self,
        truncation_psi: float | None = None,
        truncation_cutoff: int | None = None,
        input_transform: Any = None,
        **unknown: Any,
    ) -> StyleGAN3Generator:
        """Set truncation (psi toward ``w_avg``, optionally only the first ``truncation_cutoff``
        wp layers) and the ``input_transform`` (3 x 3 array, the inverse image transform as NVlabs
        stores it; the identity undoes it). Returns self.

        Raises TlganError for ``noise_mode`` (StyleGAN3 has no noise), unknown options, and a
        transform that is not a finite 3 x 3 matrix with last row (0, 0, 1).
        """
        if "noise_mode" in unknown:
            raise TlganError("StyleGAN3 has no noise: noise_mode does not apply to it; leave it unset")
        if unknown:
            raise TlganError(
                f"unknown StyleGAN3 option(s) {', '.join(sorted(unknown))}; "
                f"known: truncation_psi, truncation_cutoff, input_transform"
            )
        super().configure(truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)
        if input_transform is not None:
            m = torch.as_tensor(np.asarray(input_transform, dtype=np.float64)).float()
            if m.shape != (3, 3) or not torch.isfinite(m).all():
                raise TlganError(
                    f"input_transform must be a finite 3 x 3 matrix, got shape {tuple(m.shape)}; "
                    f"build one with tlgan.models.stylegan3.input_transform(rotate=..., translate=...)"
                )
            if not torch.allclose(m[2], torch.tensor([0.0, 0.0, 1.0])):
                raise TlganError(f"input_transform's last row must be (0, 0, 1), not {m[2].tolist()}")
            with torch.no_grad():
                self.synthesis.input.transform.copy_(m)
        return self

    # -- the contract's synthesis ---------------------------------------------------------------

    def noise_maps(self) -> dict[str, torch.Tensor]:
        """StyleGAN3 has no per-pixel noise: always {}."""
        return {}

    def synthesize_raw(self, wp: torch.Tensor, noise: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """Images (N, 3, R, R) from wp (N, num_ws, w_dim), not clamped; differentiable in wp and the weights.

        Raises TlganError when ``noise`` maps are given (StyleGAN3 has none).
        """
        if noise:
            raise TlganError(
                f"StyleGAN3 has no noise maps, so noise ({', '.join(sorted(noise))}) cannot be set; "
                f"optimise the latent alone"
            )
        wp = self.check_latents(wp, "wp").to(self.device)
        return self.synthesis(wp)

    def _synthesize(self, latents: torch.Tensor, space: str) -> torch.Tensor:
        wp = latents if space == "wp" else self._map_latents(latents, space, "wp")
        return self.synthesis(wp).clamp(-1.0, 1.0)

    # -- for closed-form directions (SeFa) -------------------------------------------------------

    def latent_weight(self, space: str = "w", layers: Sequence[int] | None = None) -> torch.Tensor:
        """The style affine weights (F, w_dim) of the convolutions that take wp layers ``layers``, stacked.

        wp layer 0 drives the input's rotation and translation, and the last one toRGB; the
        modulated convolutions take layers 1 .. num_ws - 2, which ``layers`` None means.
        """
        if space not in ("w", "wp"):
            raise TlganError(f"StyleGAN3's style weights take w, not {space!r}; fit SeFa in w")
        convs = self.synthesis.layers()[:-1]
        chosen = range(1, len(convs) + 1) if layers is None else [int(k) for k in layers]
        bad = [k for k in chosen if not 1 <= k <= len(convs)]
        if bad:
            raise TlganError(
                f"layer(s) {bad} have no modulated convolution; this generator's are 1-{len(convs)} "
                f"(wp layer 0 feeds the input transform, {len(convs) + 1} toRGB)"
            )
        return torch.cat([convs[k - 1].affine.effective_weight().detach() for k in chosen])
