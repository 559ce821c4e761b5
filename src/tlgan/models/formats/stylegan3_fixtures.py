"""StyleGAN3 networks in NVlabs' pickle layout, written by tlgan's own code, for tests and benchmarks.

- :func:`tiny_stylegan3`: a seeded 32 px T or R network whose every parameter and buffer that a
  trained network changes (biases, ``magnitude_ema``, ``w_avg``, the input affine) is random, so
  no part of the computation hides behind a zero or a one.
- :func:`write_nvlabs_stylegan3_pickle`: ``{"G", "D", "G_ema", "augment_pipe", ...}`` with each
  network pickled as ``torch_utils.persistence._reconstruct_persistent_obj(meta)``, sub-modules
  under NVlabs' class names, and the NumPy attributes (sizes, sampling rates) real files carry.

Like :mod:`tlgan.models.formats.fixtures`, these hold tlgan's weights in another format's
structure; they are not exports (the pickle carries no source code).
"""

from __future__ import annotations

import collections
import pickle
from typing import Any

import numpy as np
import torch

from tlgan.models.formats.fixtures import _EasyDict, _fake_modules, _Persistent
from tlgan.models.stylegan3 import CONFIGS, StyleGAN3Generator

TINY3 = dict(
    z_dim=16, w_dim=16, img_resolution=32, channel_base=256, channel_max=16, num_layers=6, mapping_layers=2
)


def tiny_stylegan3(config: str = "t", seed: int = 0, **overrides) -> StyleGAN3Generator:
    """A seeded 32 px StyleGAN3-T (``config="t"``) or -R (``"r"``) with random weights (eval mode)."""
    torch.manual_seed(seed)
    G = StyleGAN3Generator(**{**TINY3, **CONFIGS[config], **overrides}).eval()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in G.named_parameters():
            if name.endswith("bias"):
                p.add_(0.1 * torch.randn(p.shape, generator=g))
        # A trained input affine turns and moves the features with w; a fresh one does not.
        G.synthesis.input.affine.weight.copy_(0.3 * torch.randn(4, G.w_dim, generator=g))
        for layer in G.synthesis.layers():
            layer.magnitude_ema.fill_(float(0.5 + torch.rand((), generator=g)))
        G.mapping.w_avg.copy_(0.3 * torch.randn(G.w_dim, generator=g))
    return G


_CLASS_OF = {
    "mapping": "MappingNetwork",
    "synthesis": "SynthesisNetwork",
    "input": "SynthesisInput",
}


def _persisted(
    module: torch.nn.Module,
    class_name: str,
    init_kwargs: dict[str, Any],
    extra_state: dict[str, dict[str, Any]],
    path: str = "",
) -> _Persistent:
    params = collections.OrderedDict(
        (n, torch.nn.Parameter(p.detach().clone(), requires_grad=False))
        for n, p in module._parameters.items()
    )
    buffers = collections.OrderedDict(
        (n, None if b is None else b.detach().clone())
        for n, b in module._buffers.items()
        if n not in module._non_persistent_buffers_set
    )
    children = collections.OrderedDict()
    for name, child in module._modules.items():
        cls = _CLASS_OF.get(name, "SynthesisLayer" if name.startswith("L") else "FullyConnectedLayer")
        children[name] = _persisted(child, cls, {}, extra_state, f"{path}.{name}" if path else name)
    state: dict[str, Any] = {
        "training": False,
        "_parameters": params,
        "_buffers": buffers,
        "_non_persistent_buffers_set": set(),
        "_modules": children,
        "_forward_hooks": collections.OrderedDict(),
        "_init_args": (),
        "_init_kwargs": init_kwargs,
    }
    # Plain attributes as NVlabs' modules keep them: NumPy sizes and rates, lists of names.
    if class_name == "SynthesisInput":
        state.update(
            size=np.broadcast_to(np.asarray(module.size), [2]), sampling_rate=np.float64(module.sampling_rate)
        )
    elif class_name == "SynthesisLayer":
        state.update(
            in_size=np.array([module.in_size] * 2), up_factor=module.up_factor, padding=module.padding
        )
    elif class_name == "SynthesisNetwork":
        state.update(layer_names=list(module.layer_names), num_ws=module.num_ws)
    elif class_name == "FullyConnectedLayer":
        state.update(weight_gain=np.float64(module.weight_gain), activation=module.activation)
    state.update(extra_state.get(path, {}))
    return _Persistent(class_name, state)


def nvlabs_stylegan3_kwargs(G: StyleGAN3Generator) -> dict[str, Any]:
    """The constructor arguments NVlabs' training records in ``G_ema._init_kwargs`` for ``G``."""
    c = G.config_kwargs
    synthesis = {
        k: c[k]
        for k in (
            "channel_base",
            "channel_max",
            "num_layers",
            "num_critical",
            "first_cutoff",
            "first_stopband",
            "last_stopband_rel",
            "margin_size",
            "output_scale",
            "conv_kernel",
            "filter_size",
            "lrelu_upsampling",
            "use_radial_filters",
            "conv_clamp",
        )
    }
    return _EasyDict(
        z_dim=c["z_dim"],
        w_dim=c["w_dim"],
        mapping_kwargs=_EasyDict(num_layers=c["mapping_layers"], lr_multiplier=c["mapping_lr"]),
        **synthesis,
        magnitude_ema_beta=0.5 ** (32 / 20e3),
        num_fp16_res=4,
        c_dim=0,
        img_resolution=c["img_resolution"],
        img_channels=c["img_channels"],
    )


def write_nvlabs_stylegan3_pickle(
    G: StyleGAN3Generator,
    path,
    extra: dict[str, Any] | None = None,
    kwargs: dict[str, Any] | None = None,
    extra_state: dict[str, dict[str, Any]] | None = None,
) -> None:
    """``{"G", "D", "G_ema", "augment_pipe", "training_set_kwargs"}`` as NVlabs' stylegan3 saves them.

    ``extra`` adds top-level entries, ``kwargs`` replaces G_ema's constructor arguments and
    ``extra_state`` adds attributes to the state of the sub-module at a dotted path ("" is G_ema,
    "synthesis.input" its input), e.g. to plant a hostile object inside a network.
    """
    with _fake_modules():
        g_ema = _persisted(
            G, "Generator", kwargs if kwargs is not None else nvlabs_stylegan3_kwargs(G), extra_state or {}
        )
        d = _Persistent(
            "Discriminator",
            {
                "_parameters": collections.OrderedDict(
                    b0=torch.nn.Parameter(torch.randn(3), requires_grad=False)
                ),
                "_buffers": collections.OrderedDict(),
                "_modules": collections.OrderedDict(),
                "_init_kwargs": _EasyDict(c_dim=0, img_resolution=G.img_resolution),
            },
        )
        data = {
            "G": g_ema,
            "D": d,
            "G_ema": g_ema,
            "augment_pipe": None,
            "training_set_kwargs": _EasyDict(path="data.zip", resolution=G.img_resolution),
            **(extra or {}),
        }
        with open(path, "wb") as f:
            pickle.dump(data, f, protocol=4)
