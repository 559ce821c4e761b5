"""StyleGAN2 checkpoints in the layouts real files use, written by tlgan's own code, for tests
and benchmarks (``tlgan bench --only stylegan2`` times loading them).

They hold tlgan's weights in other formats' structure; they are not exports for other tools
(the NVlabs-style pickle carries no source code, so NVlabs' own loader cannot open it).

- :func:`tiny_stylegan2`: a seeded 32 px network whose every parameter (noise strengths and
  biases too) is random, so no part of the computation hides behind a zero.
- :func:`write_rosinality`: ``{"g_ema", "latent_avg"[, "g", "d", "args", optimiser states]}``.
- :func:`write_nvlabs_pickle`: a dict of persistent objects laid out as NVlabs' pickles are:
  each network pickled as ``torch_utils.persistence._reconstruct_persistent_obj(meta)`` with
  meta's type, version, module_src, class_name and the module ``__dict__`` as state.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import pickle
import sys
import types
from typing import Any

import torch

from tlgan.models.formats import rosinality
from tlgan.models.stylegan2 import StyleGAN2Generator, lowpass_filter

TINY = dict(z_dim=16, w_dim=16, img_resolution=32, channel_base=128, channel_max=16, mapping_layers=2)


def tiny_stylegan2(seed: int = 0, **overrides) -> StyleGAN2Generator:
    torch.manual_seed(seed)
    G = StyleGAN2Generator(**{**TINY, **overrides}).eval()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in G.named_parameters():
            if name.endswith("noise_strength"):
                p.copy_(0.1 + 0.2 * torch.rand((), generator=g))
            elif name.endswith("bias"):
                p.add_(0.1 * torch.randn(p.shape, generator=g))
        G.mapping.w_avg.copy_(0.3 * torch.randn(G.w_dim, generator=g))
    return G


def write_rosinality(G: StyleGAN2Generator, path, full: bool = False) -> None:
    log2 = G.img_resolution.bit_length() - 1
    state, latent_avg = rosinality.from_tlgan(G.state_dict(), log2, G.config_kwargs["mapping_layers"])
    blur = lowpass_filter() * 4  # rosinality stores each resampling kernel times factor**2
    for k in range(log2 - 2):
        state[f"convs.{2 * k}.conv.blur.kernel"] = blur.clone()
        state[f"to_rgbs.{k}.upsample.kernel"] = blur.clone()
    data: dict[str, Any] = {"g_ema": state, "latent_avg": latent_avg}
    if full:
        data.update(
            g={k: v + 1 for k, v in state.items()},
            d={"convs.0.0.weight": torch.randn(4, 3, 1, 1)},
            g_optim={"state": {}, "param_groups": [{"lr": 0.002, "params": [0, 1]}]},
            d_optim={"state": {}, "param_groups": []},
            args=argparse.Namespace(size=G.img_resolution, channel_multiplier=2, iter=800000),
        )
    torch.save(data, path)


# ---- NVlabs persistent-object pickles -------------------------------------------------------


def _reconstruct_persistent_obj(meta):  # the name the real pickles call; never run by tlgan
    raise AssertionError("tlgan must not call the pickle's own reconstruct function")


class _EasyDict(dict):
    pass


@contextlib.contextmanager
def _fake_modules(extra: dict[str, Any] | None = None):
    """Make ``torch_utils.persistence`` and ``dnnlib.util`` importable so pickle writes their names."""
    persistence = types.ModuleType("torch_utils.persistence")
    persistence._reconstruct_persistent_obj = _reconstruct_persistent_obj
    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    util = types.ModuleType("dnnlib.util")
    util.EasyDict = _EasyDict
    _EasyDict.__module__, _EasyDict.__qualname__ = "dnnlib.util", "EasyDict"
    mods = {
        "torch_utils": types.ModuleType("torch_utils"),
        "torch_utils.persistence": persistence,
        "dnnlib": types.ModuleType("dnnlib"),
        "dnnlib.util": util,
        **(extra or {}),
    }
    with stand_in_modules(mods):
        yield


@contextlib.contextmanager
def stand_in_modules(mods: dict[str, types.ModuleType]):
    """Put ``mods`` (name -> module) into ``sys.modules`` for the block, so pickle writes those
    modules' names for the objects in them; the previous entries come back afterwards."""
    saved = {k: sys.modules.get(k) for k in mods}
    sys.modules.update(mods)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


class _Persistent:
    def __init__(self, class_name: str, state: dict[str, Any]):
        self.class_name, self.state = class_name, state

    def __reduce__(self):
        meta = dict(
            type="class",
            version=6,
            module_src="# source of the module that defined the class\n",
            class_name=self.class_name,
            state=self.state,
        )
        return _reconstruct_persistent_obj, (meta,)


_CLASS_OF = {
    "mapping": "MappingNetwork",
    "synthesis": "SynthesisNetwork",
    "affine": "FullyConnectedLayer",
    "torgb": "ToRGBLayer",
    "conv0": "SynthesisLayer",
    "conv1": "SynthesisLayer",
}


def _persisted(module: torch.nn.Module, class_name: str, init_kwargs: dict[str, Any]) -> _Persistent:
    params = collections.OrderedDict(
        (n, torch.nn.Parameter(p.detach().clone(), requires_grad=False))
        for n, p in module._parameters.items()
    )
    buffers = collections.OrderedDict((n, b.detach().clone()) for n, b in module._buffers.items())
    if "resample_filter" in buffers or class_name in ("SynthesisLayer", "SynthesisBlock"):
        buffers["resample_filter"] = lowpass_filter()  # NVlabs keeps it as a persistent buffer
    children = collections.OrderedDict()
    for name, child in module._modules.items():
        cls = _CLASS_OF.get(name, "SynthesisBlock" if name.startswith("b") else "FullyConnectedLayer")
        children[name] = _persisted(child, cls, {})
    state = {
        "training": False,
        "_parameters": params,
        "_buffers": buffers,
        "_non_persistent_buffers_set": set(),
        "_modules": children,
        "_forward_hooks": collections.OrderedDict(),
        "_init_args": (),
        "_init_kwargs": init_kwargs,
    }
    return _Persistent(class_name, state)


def nvlabs_kwargs(G: StyleGAN2Generator) -> dict[str, Any]:
    c = G.config_kwargs
    return _EasyDict(
        z_dim=c["z_dim"],
        c_dim=0,
        w_dim=c["w_dim"],
        img_resolution=c["img_resolution"],
        img_channels=3,
        mapping_kwargs=_EasyDict(num_layers=c["mapping_layers"]),
        synthesis_kwargs=_EasyDict(
            channel_base=c["channel_base"],
            channel_max=c["channel_max"],
            num_fp16_res=4,
            conv_clamp=c["conv_clamp"],
            architecture="skip",
        ),
    )


def write_nvlabs_pickle(
    G: StyleGAN2Generator, path, extra: dict[str, Any] | None = None, kwargs: dict[str, Any] | None = None
) -> None:
    """``{"G", "D", "G_ema", "augment_pipe", "training_set_kwargs"}`` as stylegan2-ada-pytorch saves them."""
    with _fake_modules():
        g_ema = _persisted(G, "Generator", kwargs if kwargs is not None else nvlabs_kwargs(G))
        d = _Persistent(
            "Discriminator",
            {
                "_parameters": collections.OrderedDict(
                    b0=torch.nn.Parameter(torch.randn(3), requires_grad=False)
                ),
                "_buffers": collections.OrderedDict(),
                "_modules": collections.OrderedDict(),
                "_init_kwargs": _EasyDict(c_dim=0, img_resolution=32),
            },
        )
        data = {
            "G": g_ema,
            "D": d,
            "G_ema": g_ema,
            "augment_pipe": None,
            "training_set_kwargs": _EasyDict(path="data.zip", resolution=32),
            **(extra or {}),
        }
        with open(path, "wb") as f:
            pickle.dump(data, f, protocol=4)
