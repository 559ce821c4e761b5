"""rosinality/stylegan2-pytorch checkpoints (``.pt``): ``{"g_ema": state_dict, "latent_avg": w_avg}``,
or full training checkpoints that add ``g``, ``d``, optimiser states and ``args``.

Read with ``torch.load(weights_only=True)`` (plus ``argparse.Namespace`` for ``args``). The
architecture is inferred from the keys and shapes: size from the number of toRGB layers,
style_dim from the mapping weights, n_mlp from their count, and the channels at every
resolution (expressed as NVlabs' ``channel_base`` / ``channel_max``; rosinality's
``channel_multiplier`` 1 and 2 are ``channel_base`` 16384 and 32768).

Key names: :func:`to_tlgan` and :func:`from_tlgan` are the two directions of one table.
"""

from __future__ import annotations

import re

import torch

from tlgan.errors import TlganError
from tlgan.models.formats import Checkpoint, Probe

DESCRIPTION = "rosinality stylegan2-pytorch .pt"


def _conv_names(res_index: int) -> list[tuple[str, str]]:
    """(rosinality prefix, tlgan prefix) of the convolutions of the block at side 4 * 2^res_index."""
    if res_index == 0:
        return [("conv1", "synthesis.b4.conv1")]
    res = 4 * 2**res_index
    return [
        (f"convs.{2 * res_index - 2}", f"synthesis.b{res}.conv0"),
        (f"convs.{2 * res_index - 1}", f"synthesis.b{res}.conv1"),
    ]


def key_table(log2_size: int, n_mlp: int) -> list[tuple[str, str, str]]:
    """Rows (rosinality key, tlgan key, reshape rule) for a generator of side 2**log2_size.

    Rules: "same" copies; "squeeze0" drops rosinality's leading batch axis of 1 (conv weights,
    the constant input, noise buffers); "rgb_bias" is (1, C, 1, 1) <-> (C,); "scalar" is (1,) <-> ().
    """
    rows: list[tuple[str, str, str]] = []
    for i in range(n_mlp):
        rows += [
            (f"style.{i + 1}.weight", f"mapping.fc{i}.weight", "same"),
            (f"style.{i + 1}.bias", f"mapping.fc{i}.bias", "same"),
        ]
    rows.append(("input.input", "synthesis.b4.const", "squeeze0"))
    noise = 0
    for r in range(log2_size - 1):
        for ros, own in _conv_names(r):
            rows += [
                (f"{ros}.conv.weight", f"{own}.weight", "squeeze0"),
                (f"{ros}.conv.modulation.weight", f"{own}.affine.weight", "same"),
                (f"{ros}.conv.modulation.bias", f"{own}.affine.bias", "same"),
                (f"{ros}.noise.weight", f"{own}.noise_strength", "scalar"),
                (f"{ros}.activate.bias", f"{own}.bias", "same"),
                (f"noises.noise_{noise}", f"{own}.noise_const", "noise"),
            ]
            noise += 1
        res = 4 * 2**r
        rgb = "to_rgb1" if r == 0 else f"to_rgbs.{r - 1}"
        rows += [
            (f"{rgb}.conv.weight", f"synthesis.b{res}.torgb.weight", "squeeze0"),
            (f"{rgb}.conv.modulation.weight", f"synthesis.b{res}.torgb.affine.weight", "same"),
            (f"{rgb}.conv.modulation.bias", f"synthesis.b{res}.torgb.affine.bias", "same"),
            (f"{rgb}.bias", f"synthesis.b{res}.torgb.bias", "rgb_bias"),
        ]
    return rows


def _to_own(rule: str, t: torch.Tensor) -> torch.Tensor:
    if rule == "squeeze0":
        return t[0]
    if rule == "noise":
        return t[0, 0]
    if rule == "rgb_bias":
        return t.reshape(-1)
    if rule == "scalar":
        return t.reshape(())
    return t


def _to_ros(rule: str, t: torch.Tensor) -> torch.Tensor:
    if rule == "squeeze0":
        return t[None]
    if rule == "noise":
        return t[None, None]
    if rule == "rgb_bias":
        return t.reshape(1, -1, 1, 1)
    if rule == "scalar":
        return t.reshape(1)
    return t


def _sizes(state: dict[str, torch.Tensor], source: str) -> tuple[int, int]:
    """(log2 of the image side, n_mlp) from the keys."""
    if "input.input" not in state or "style.1.weight" not in state:
        raise TlganError(
            f"{source}: g_ema has no 'input.input' / 'style.1.weight'; this is not a rosinality "
            f"StyleGAN2 generator"
        )
    n_rgbs = len({k.split(".")[1] for k in state if k.startswith("to_rgbs.")})
    n_mlp = len({k.split(".")[1] for k in state if re.match(r"^style\.\d+\.weight$", k)})
    return n_rgbs + 2, n_mlp


def _blur_keys(state: dict[str, torch.Tensor]) -> list[str]:
    """rosinality's stored resampling kernels (derived from [1, 3, 3, 1]; tlgan computes them)."""
    return [k for k in state if k.endswith(".blur.kernel") or k.endswith(".upsample.kernel")]


def to_tlgan(
    state: dict[str, torch.Tensor], latent_avg: torch.Tensor | None, source: str = "checkpoint"
) -> dict[str, torch.Tensor]:
    """rosinality ``g_ema`` state dict (+ ``latent_avg``) -> tlgan StyleGAN2 state dict; every key accounted for."""
    log2_size, n_mlp = _sizes(state, source)
    rows = key_table(log2_size, n_mlp)
    out: dict[str, torch.Tensor] = {}
    for ros, own, rule in rows:
        if ros not in state:
            raise TlganError(
                f"{source}: g_ema lacks {ros!r}, which a {2**log2_size} px generator with "
                f"{n_mlp} mapping layers has; the file is incomplete or another architecture"
            )
        out[own] = _to_own(rule, state[ros]).float().clone()
    left = set(state) - {r[0] for r in rows} - set(_blur_keys(state))
    if left:
        raise TlganError(f"{source}: g_ema has keys tlgan's StyleGAN2 does not know: {sorted(left)[:5]}")
    w_dim = out["mapping.fc0.weight"].shape[1]
    out["mapping.w_avg"] = (
        latent_avg.reshape(-1).float().clone() if latent_avg is not None else torch.zeros(w_dim)
    )
    return out


def from_tlgan(
    state: dict[str, torch.Tensor], log2_size: int, n_mlp: int
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """tlgan StyleGAN2 state dict -> (rosinality ``g_ema`` state dict without blur kernels, ``latent_avg``)."""
    out = {ros: _to_ros(rule, state[own]).clone() for ros, own, rule in key_table(log2_size, n_mlp)}
    return out, state["mapping.w_avg"].clone()


def infer_channels(channels: dict[int, int], img_resolution: int, source: str) -> tuple[int, int]:
    """(channel_base, channel_max) with min(channel_base // res, channel_max) == channels[res] at every res."""
    channel_max = max(channels.values())
    below = [res for res in sorted(channels) if channels[res] < channel_max]
    channel_base = channels[below[0]] * below[0] if below else channel_max * img_resolution
    if any(min(channel_base // res, channel_max) != ch for res, ch in channels.items()):
        raise TlganError(
            f"{source}: channels per resolution {channels} do not follow "
            f"min(channel_base // res, channel_max); tlgan's StyleGAN2 cannot hold them"
        )
    return channel_base, channel_max


def matches(probe: Probe) -> bool:
    if probe.suffix not in (".pt", ".pth") or not probe.is_zip or probe.is_torchscript:
        return False
    obj = probe.torch_object
    return isinstance(obj, dict) and isinstance(obj.get("g_ema"), dict) and "input.input" in obj["g_ema"]


def read(probe: Probe) -> Checkpoint:
    source = str(probe.path)
    obj = probe.torch_object
    state = dict(obj["g_ema"])
    log2_size, n_mlp = _sizes(state, source)
    size = 2**log2_size
    own = to_tlgan(state, obj.get("latent_avg"), source)
    channels = {4: own["synthesis.b4.conv1.weight"].shape[0]}
    for r in range(1, log2_size - 1):
        res = 4 * 2**r
        channels[res] = own[f"synthesis.b{res}.conv1.weight"].shape[0]
    channel_base, channel_max = infer_channels(channels, size, source)
    args = obj.get("args")
    lr_mlp = float(getattr(args, "lr_mlp", 0.01)) if args is not None else 0.01
    w_dim = own["mapping.fc0.weight"].shape[1]
    kwargs = {
        "z_dim": w_dim,
        "w_dim": w_dim,
        "img_resolution": size,
        "img_channels": 3,
        "channel_base": channel_base,
        "channel_max": channel_max,
        "mapping_layers": n_mlp,
        "mapping_lr": lr_mlp,
        "mapping_features": None,
        "conv_clamp": None,
    }
    if own["mapping.fc0.weight"].shape[0] != w_dim:
        kwargs["mapping_features"] = int(own["mapping.fc0.weight"].shape[0])
    info = {"latent_avg": "latent_avg" in obj, "size": size, "n_mlp": n_mlp}
    if channel_max == 512 and channel_base % 16384 == 0:
        info["channel_multiplier"] = channel_base // 16384
    return Checkpoint("StyleGAN2Generator", kwargs, own, format="rosinality", info=info)
