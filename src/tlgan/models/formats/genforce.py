"""InterFaceGAN's PyTorch generators (``pggan_celebahq.pth``, ``stylegan_celebahq.pth``,
``stylegan_ffhq.pth``): plain state dicts saved with ``torch.save`` (the pre-1.6 format or the zip one).

Read with ``torch.load(weights_only=True)``. tlgan's :class:`~tlgan.models.pggan.PGGANGenerator` and
:class:`~tlgan.models.stylegan1.StyleGANGenerator` use these key names, so the tensors load as
they are; the architecture is inferred from the keys and shapes:

- PGGAN (``layer0.conv.weight``, ``output0.conv.weight``, ...): the side from the number of toRGB
  layers ``output{k}`` (4 * 2^(n - 1)), z_dim from the dense layer, the channels at every side
  (as ``fmap_base`` / ``fmap_max``), fused upsampling from ``layer2.weight`` instead of
  ``layer2.conv.weight``.
- StyleGAN (``mapping.dense0.linear.weight``, ``synthesis.layer0.first_layer``, ...): likewise,
  plus the mapping's depth and widths; ``fused_scale`` "auto" when exactly the layers at 128 px
  and above are fused. The blur kernels (``synthesis.layer{i}.blur.kernel``) are checked to be
  the [1, 2, 1] filter and dropped: tlgan computes them. InterFaceGAN's files do not store the
  truncation (its ``truncation.truncation`` coefficients are removed on saving; if present they
  are read): the model gets InterFaceGAN's setting, psi 0.7 on the first 8 layers.
"""

from __future__ import annotations

import re
from typing import Any

import torch

from tlgan.errors import TlganError
from tlgan.models.formats import Checkpoint, Probe

DESCRIPTION = "InterFaceGAN PGGAN/StyleGAN .pth"

DEFAULT_TRUNCATION_PSI = 0.7
DEFAULT_TRUNCATION_LAYERS = 8
MAPPING_LRMUL = 0.01


def network_kind(state: dict[str, Any]) -> str | None:
    """ "PGGAN", "StyleGAN" or None, from the keys that only that network's state dict has."""
    if "layer0.conv.weight" in state and "output0.conv.weight" in state:
        return "PGGAN"
    if "mapping.dense0.linear.weight" in state and "synthesis.layer0.first_layer" in state:
        return "StyleGAN"
    return None


def _count(state: dict[str, Any], pattern: str) -> int:
    regex = re.compile(pattern)
    return len({m.group(1) for k in state for m in [regex.match(k)] if m})


def infer_fmaps(channels: list[int], source: str) -> tuple[int, int]:
    """(fmap_base, fmap_max) with min(fmap_base // 2^(k + 1), fmap_max) == channels[k] at every level k."""
    from tlgan.models.pggan import nf

    fmap_max = max(channels)
    below = [k for k, ch in enumerate(channels) if ch < fmap_max]
    fmap_base = channels[below[0]] * 2 ** (below[0] + 1) if below else fmap_max * 2 ** len(channels)
    if [nf(k + 1, fmap_base, fmap_max) for k in range(len(channels))] != channels:
        raise TlganError(
            f"{source}: channels per level {channels} do not follow min(fmap_base // 2^k, fmap_max); "
            f"tlgan's progressive networks cannot hold them"
        )
    return fmap_base, fmap_max


def _shape(state: dict[str, torch.Tensor], key: str, source: str) -> tuple[int, ...]:
    if key not in state:
        raise TlganError(
            f"{source}: the state dict lacks {key!r}; the file is incomplete or another architecture"
        )
    return tuple(state[key].shape)


def pggan_kwargs(state: dict[str, torch.Tensor], source: str) -> dict[str, Any]:
    levels = _count(state, r"^output(\d+)\.conv\.weight$")
    channels = [_shape(state, f"layer{2 * k + 1}.conv.weight", source)[0] for k in range(levels)]
    fmap_base, fmap_max = infer_fmaps(channels, source)
    return {
        "z_dim": _shape(state, "layer0.conv.weight", source)[1],
        "img_resolution": 2 ** (levels + 1),
        "img_channels": _shape(state, "output0.conv.weight", source)[0],
        "fmap_base": fmap_base,
        "fmap_max": fmap_max,
        "fused_scale": levels > 1 and "layer2.weight" in state,
    }


def _fused_scale(state: dict[str, torch.Tensor], levels: int, source: str):
    from tlgan.models.stylegan1 import uses_fused_scale

    fused = [f"synthesis.layer{2 * k}.weight" in state for k in range(1, levels)]
    for setting in ("auto", True, False):
        if fused == [uses_fused_scale(setting, 4 * 2**k) for k in range(1, levels)]:
            return setting
    raise TlganError(
        f"{source}: fused upsampling at sides {[4 * 2 ** (k + 1) for k, f in enumerate(fused) if f]} "
        f"only; tlgan's StyleGAN fuses all, none, or those at 128 px and above"
    )


def truncation_from_coefficients(coefs: torch.Tensor, num_ws: int, source: str) -> tuple[float, int | None]:
    """(psi, cutoff) from InterFaceGAN's per-layer coefficients (1, num_ws, 1): psi on the first layers, 1 after."""
    values = [float(v) for v in coefs.reshape(-1).tolist()]
    if len(values) != num_ws:
        raise TlganError(f"{source}: truncation.truncation has {len(values)} layers, the network {num_ws}")
    if all(v == 1.0 for v in values):
        return 1.0, None
    cutoff = next((i for i, v in enumerate(values) if v == 1.0), num_ws)
    if any(v != values[0] for v in values[:cutoff]) or any(v != 1.0 for v in values[cutoff:]):
        raise TlganError(
            f"{source}: truncation.truncation {values} is not one psi on the first layers and 1 after"
        )
    return values[0], cutoff


def stylegan_kwargs(state: dict[str, torch.Tensor], source: str) -> dict[str, Any]:
    levels = _count(state, r"^synthesis\.output(\d+)\.conv\.weight$")
    mapping_layers = _count(state, r"^mapping\.dense(\d+)\.linear\.weight$")
    channels = [_shape(state, f"synthesis.layer{2 * k + 1}.conv.weight", source)[0] for k in range(levels)]
    fmap_base, fmap_max = infer_fmaps(channels, source)
    first = _shape(state, "mapping.dense0.linear.weight", source)
    last = _shape(state, f"mapping.dense{mapping_layers - 1}.linear.weight", source)
    num_ws = 2 * levels
    return {
        "z_dim": first[1],
        "w_dim": last[0],
        "img_resolution": 2 ** (levels + 1),
        "img_channels": _shape(state, "synthesis.output0.conv.weight", source)[0],
        "fmap_base": fmap_base,
        "fmap_max": fmap_max,
        "mapping_layers": mapping_layers,
        "mapping_fmaps": first[0] if mapping_layers > 1 else 512,
        "mapping_lrmul": MAPPING_LRMUL,
        "fused_scale": _fused_scale(state, levels, source),
        "truncation_psi": DEFAULT_TRUNCATION_PSI,
        "truncation_cutoff": min(DEFAULT_TRUNCATION_LAYERS, num_ws),
    }


def checkpoint_from_state(
    state: dict[str, torch.Tensor], source: str, format: str, info: dict[str, Any] | None = None
) -> Checkpoint:
    """A :class:`Checkpoint` for a state dict in InterFaceGAN's key names (PGGAN or StyleGAN)."""
    from tlgan.models.stylegan1 import blur_kernel

    kind = network_kind(state)
    if kind is None:
        raise TlganError(
            f"{source}: neither a PGGAN (layer0.conv.weight) nor a StyleGAN "
            f"(mapping.dense0.linear.weight) state dict"
        )
    state = {k: v for k, v in state.items()}
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise TlganError(f"{source}: {bad[:3]} are not tensors; this is not a generator state dict")
    info = {"network": kind, **(info or {})}
    if kind == "PGGAN":
        return Checkpoint(
            "PGGANGenerator", pggan_kwargs(state, source), _floats(state), format=format, info=info
        )
    kwargs = stylegan_kwargs(state, source)
    for key in [k for k in state if k.endswith(".blur.kernel")]:
        kernel = state.pop(key)
        expected = blur_kernel()[None, None].expand(kernel.shape[0], 1, 3, 3)
        if kernel.shape != expected.shape or not torch.allclose(kernel.float(), expected):
            raise TlganError(f"{source}: {key} is not the [1, 2, 1] blur filter tlgan's StyleGAN uses")
    coefs = state.pop("truncation.truncation", None)
    if coefs is not None:
        psi, cutoff = truncation_from_coefficients(
            coefs, 2 * (kwargs["img_resolution"].bit_length() - 2), source
        )
        kwargs.update(truncation_psi=psi, truncation_cutoff=cutoff)
        info["truncation"] = "stored"
    else:
        info.setdefault("truncation", "InterFaceGAN default")
    return Checkpoint("StyleGANGenerator", kwargs, _floats(state), format=format, info=info)


def _floats(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().float().clone() for k, v in state.items()}


def matches(probe: Probe) -> bool:
    if probe.suffix not in (".pth", ".pt") or probe.is_torchscript:
        return False
    obj = probe.torch_object
    return isinstance(obj, dict) and network_kind(obj) is not None


def read(probe: Probe) -> Checkpoint:
    return checkpoint_from_state(probe.torch_object, str(probe.path), format="interfacegan-pth")
