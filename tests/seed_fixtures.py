"""Tiny PGGAN and StyleGAN (v1) checkpoints in the formats real files use, written by tlgan's own code.

- :func:`tiny_pggan`, :func:`tiny_stylegan`: seeded 32 px networks whose every parameter (biases,
  noise strengths, ``w_avg`` too) is random, so no part of the computation hides behind a zero.
- :func:`write_pth`: the state dict as InterFaceGAN saves it (StyleGAN's blur kernels included),
  in torch's zip format or its pre-1.6 one.
- :func:`write_tf_pickle`: ``(G, D, Gs)`` of stand-ins for ``tfutil.Network`` (PGGAN) or
  ``dnnlib.tflib.network.Network`` (StyleGAN, with mapping and synthesis components), pickled
  under those module paths with the state layout their ``__getstate__`` returns: version, name,
  static_kwargs, build_module_src, build_func_name, variables as (name, ndarray) pairs.
"""

from __future__ import annotations

import contextlib
import pickle
import types
from typing import Any

import numpy as np
import torch

from tlgan.models.formats import tf_pickle
from tlgan.models.formats.fixtures import stand_in_modules
from tlgan.models.pggan import PGGANGenerator
from tlgan.models.stylegan1 import StyleGANGenerator, blur_kernel, uses_fused_scale

TINY_PGGAN = dict(z_dim=16, img_resolution=32, fmap_base=128, fmap_max=16)
TINY_STYLEGAN = dict(
    z_dim=16,
    w_dim=12,
    img_resolution=32,
    fmap_base=128,
    fmap_max=16,
    mapping_layers=3,
    mapping_fmaps=20,
    truncation_psi=0.7,
    truncation_cutoff=8,
)
# What the build source would do if anything ran it: the tests check this never happens.
HOSTILE_SOURCE = "import pathlib\npathlib.Path({marker!r}).write_text('the pickle ran code')\n"


def _randomize(module: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("bias") or name.endswith("apply_noise.weight"):
                p.copy_(0.2 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g))
        for name, b in module.named_buffers():
            if name.endswith("noise") or name.endswith("w_avg"):
                b.copy_(0.5 * torch.randn(b.shape, generator=g))


def tiny_pggan(seed: int = 0, **overrides) -> PGGANGenerator:
    G = PGGANGenerator(**{**TINY_PGGAN, **overrides}).eval()
    _randomize(G, seed)
    return G


def tiny_stylegan(seed: int = 0, **overrides) -> StyleGANGenerator:
    G = StyleGANGenerator(**{**TINY_STYLEGAN, **overrides}).eval()
    _randomize(G, seed)
    return G


def interfacegan_state(G: torch.nn.Module) -> dict[str, torch.Tensor]:
    """G's state dict as InterFaceGAN's networks hold it: StyleGAN's blur kernels are buffers there."""
    state = {k: v.detach().clone() for k, v in G.state_dict().items()}
    if isinstance(G, StyleGANGenerator):
        for i, layer in enumerate(G.synthesis.layers()):
            if getattr(layer, "upsample", False):
                channels = layer.epilogue.bias.shape[0]
                state[f"synthesis.layer{i}.blur.kernel"] = blur_kernel()[None, None].repeat(channels, 1, 1, 1)
    return state


def write_pth(
    G: torch.nn.Module, path, legacy: bool = False, extra: dict[str, torch.Tensor] | None = None
) -> None:
    state = {**interfacegan_state(G), **(extra or {})}
    torch.save(state, path, _use_new_zipfile_serialization=not legacy)


# ---- TensorFlow network pickles -----------------------------------------------------------


class _TFNetwork:
    """Pickles as a TF network does: its class, then the dict its __getstate__ returns."""

    def __init__(self, state: dict[str, Any]):
        self._state = state

    def __getstate__(self):
        return self._state

    def __setstate__(self, state):  # only for pickle's protocol; tlgan never builds this class
        raise AssertionError("tlgan must not build the pickle's own network class")


@contextlib.contextmanager
def _fake_modules(module_name: str):
    """Make ``module_name.Network`` (and its parent packages) importable so pickle writes that name."""
    cls = type("Network", (_TFNetwork,), {"__module__": module_name, "__qualname__": "Network"})
    parts = module_name.split(".")
    mods = {".".join(parts[:i]): types.ModuleType(".".join(parts[:i])) for i in range(1, len(parts) + 1)}
    mods[module_name].Network = cls
    with stand_in_modules(mods):
        yield cls


def _variables(rows, state: dict[str, torch.Tensor]) -> list[tuple]:
    out = []
    for tf_name, own, rule in rows:
        array = tf_pickle._to_tf(rule, state[own]).contiguous().numpy().astype(np.float32)
        out.append(
            (tf_name, np.float32(array) if array.ndim == 0 else array)
        )  # TF returns scalars as np.float32
    return out


def _net_state(
    name: str,
    func: str,
    variables: list[tuple],
    static_kwargs: dict[str, Any],
    marker: str,
    version: int,
    components: dict[str, Any] | None = None,
) -> dict[str, Any]:
    state = {
        "version": version,
        "name": name,
        "static_kwargs": static_kwargs,
        "build_module_src": HOSTILE_SOURCE.format(marker=marker),
        "build_func_name": func,
        "variables": variables,
    }
    if components is not None:
        state["components"] = components
    return state


def write_tf_pickle(
    G: torch.nn.Module,
    path,
    marker: str = "/nonexistent/ran",
    protocol: int = 4,
    gs_kwargs: dict[str, Any] | None = None,
) -> None:
    """``(G, D, Gs)`` with G's weights in Gs (and G), as NVlabs' TF pickles are laid out."""
    state = G.state_dict()
    log2 = G.img_resolution.bit_length() - 1
    if isinstance(G, PGGANGenerator):
        module, version = "tfutil", 2
        rows = tf_pickle.pggan_table(log2, G.config_kwargs["fused_scale"])
        kwargs = {
            "num_channels": 3,
            "resolution": G.img_resolution,
            "label_size": 0,
            "fused_scale": G.config_kwargs["fused_scale"],
            **(gs_kwargs or {}),
        }

        def make(cls, name):
            return cls(_net_state(name, "G_paper", _variables(rows, state), kwargs, marker, version))

    else:
        module, version = "dnnlib.tflib.network", 3
        fused = [False] + [
            uses_fused_scale(G.config_kwargs["fused_scale"], 4 * 2**k) for k in range(1, log2 - 1)
        ]
        table = tf_pickle.stylegan_table(log2, G.config_kwargs["mapping_layers"], fused)
        synth_rows = table["synthesis"] + [("lod", "synthesis.lod", "same")]
        synth_kwargs = {
            "num_channels": 3,
            "resolution": G.img_resolution,
            "fused_scale": G.config_kwargs["fused_scale"],
            "structure": "linear",
        }
        map_kwargs = {
            "latent_size": G.z_dim,
            "dlatent_size": G.w_dim,
            "dlatent_broadcast": G.num_ws,
            "label_size": 0,
        }

        def make(cls, name):
            components = {
                "mapping": cls(
                    _net_state(
                        "G_mapping",
                        "G_mapping",
                        _variables(table["mapping"], state),
                        map_kwargs,
                        marker,
                        version,
                    )
                ),
                "synthesis": cls(
                    _net_state(
                        "G_synthesis",
                        "G_synthesis",
                        _variables(synth_rows, state),
                        synth_kwargs,
                        marker,
                        version,
                    )
                ),
            }
            return cls(
                _net_state(
                    name,
                    "G_style",
                    _variables(table["Gs"], state),
                    {"num_channels": 3, "resolution": G.img_resolution, **(gs_kwargs or {})},
                    marker,
                    version,
                    components,
                )
            )

    with _fake_modules(module) as cls:
        d = cls(
            _net_state(
                "D", "D_paper", [("4x4/Conv/weight", np.ones((3, 3, 3, 4), np.float32))], {}, marker, version
            )
        )
        data = (make(cls, "G"), d, make(cls, "Gs"))
        with open(path, "wb") as f:
            pickle.dump(data, f, protocol=protocol)
