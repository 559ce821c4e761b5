"""NVlabs network pickles (stylegan2-ada-pytorch; stylegan3's StyleGAN2, StyleGAN3-T and -R networks).

Such a ``.pkl`` is a dict ``{"G", "D", "G_ema", "augment_pipe", "training_set_kwargs", ...}``
whose networks are "persistent" objects: each is pickled as a call to
``torch_utils.persistence._reconstruct_persistent_obj(meta)`` where ``meta`` holds
``type``, ``version``, ``module_src`` (the source code of the module that defined it),
``class_name`` and ``state`` (the object's ``__dict__``: ``_parameters``, ``_buffers``,
``_modules``, ``_init_args``, ``_init_kwargs``, ...). The normal loader imports
``module_src`` and runs it. Here the hook is replaced by :class:`PersistedModule`, which keeps
the class name and state as data; ``G_ema``'s ``_init_kwargs`` give the constructor
arguments of tlgan's own :class:`~tlgan.models.stylegan2.StyleGAN2Generator` or, when its
synthesis network has a ``SynthesisInput`` (Fourier features), of
:class:`~tlgan.models.stylegan3.StyleGAN3Generator`; its parameter and buffer tree gives the
state dict (same key names; StyleGAN3's filters, frequencies and phases are buffers in it).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from tlgan.errors import TlganError
from tlgan.models.formats import Checkpoint, Probe
from tlgan.models.formats.unpickler import PickledObject, restricted_load

DESCRIPTION = "NVlabs StyleGAN2/StyleGAN3 .pkl"
RECONSTRUCT = ("torch_utils.persistence", "_reconstruct_persistent_obj")
# Plain torch modules inside a network are kept as data; an EasyDict is a dict.
DATA_CLASSES = ("torch.nn.modules.*",)
EASYDICT = ("dnnlib.util", "EasyDict")


class PersistedModule:
    """A persistent network object as data: its class name, state dict of attributes and source."""

    def __init__(self, meta: dict[str, Any]):
        if not isinstance(meta, dict) or meta.get("type") != "class" or "state" not in meta:
            raise TlganError(
                "a persistent object in the pickle has no class state; this is not a network pickle "
                "tlgan knows"
            )
        self.class_name = str(meta.get("class_name"))
        self.module_src = str(meta.get("module_src", ""))
        self.state = _plain(meta["state"])

    def __repr__(self) -> str:
        return f"<persisted {self.class_name}>"

    @property
    def init_kwargs(self) -> dict[str, Any]:
        return _plain(self.state.get("_init_kwargs", {}))

    def tensors(self, prefix: str = "") -> Iterator[tuple[str, torch.Tensor]]:
        """(key, tensor) of every parameter and persistent buffer below this module, state-dict order."""
        yield from _module_tensors(self.state, prefix)


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _module_tensors(state: dict[str, Any], prefix: str) -> Iterator[tuple[str, torch.Tensor]]:
    skip = set(state.get("_non_persistent_buffers_set") or ())
    for name, tensor in (state.get("_parameters") or {}).items():
        if tensor is not None:
            yield prefix + name, tensor
    for name, tensor in (state.get("_buffers") or {}).items():
        if tensor is not None and name not in skip:
            yield prefix + name, tensor
    for name, child in (state.get("_modules") or {}).items():
        if isinstance(child, PersistedModule):
            yield from child.tensors(f"{prefix}{name}.")
        elif isinstance(child, PickledObject) and isinstance(child.state, dict):
            yield from _module_tensors(child.state, f"{prefix}{name}.")
        elif child is not None:
            raise TlganError(
                f"module {prefix}{name} in the pickle is a {type(child).__name__}, not a network module"
            )


def matches(probe: Probe) -> bool:
    return probe.suffix == ".pkl" and ".".join(RECONSTRUCT) in probe.pickle_globals


def load_networks(path) -> dict[str, Any]:
    """The pickle's top-level dict, networks as :class:`PersistedModule` (nothing from the file is run)."""
    with open(path, "rb") as f:
        data = restricted_load(
            f,
            functions={RECONSTRUCT: PersistedModule, EASYDICT: dict},
            data_classes=DATA_CLASSES,
            source=str(path),
        )
    if not isinstance(data, dict):
        raise TlganError(
            f"{path}: the pickle holds a {type(data).__name__}, not the dict of networks "
            f"(G, D, G_ema) NVlabs pickles hold"
        )
    return data


# NVlabs' constructor arguments that tlgan's network computes the same way whatever their value
# (speed and training settings), and those it supports only at their default.
_IGNORED = {
    "num_fp16_res",
    "fp16_channels_last",
    "channels_last",
    "w_avg_beta",
    "fused_modconv_default",
    "use_noise",
}
_DEFAULTS = {
    "architecture": "skip",
    "resample_filter": [1, 3, 3, 1],
    "activation": "lrelu",
    "c_dim": 0,
    "kernel_size": 3,
    "embed_features": None,
}


def generator_kwargs(kwargs: dict[str, Any], source: str) -> dict[str, Any]:
    """NVlabs ``Generator`` constructor arguments -> :class:`StyleGAN2Generator` keyword arguments."""
    mapping = dict(kwargs.get("mapping_kwargs") or {})
    synthesis = dict(kwargs.get("synthesis_kwargs") or {})
    for key in ("z_dim", "w_dim", "img_resolution"):
        if key not in kwargs:
            raise TlganError(
                f"{source}: G_ema has no {key!r} among its constructor arguments; "
                f"this is not a StyleGAN2 generator"
            )
    if int(kwargs.get("c_dim", 0)) != 0:
        raise TlganError(
            f"{source}: a conditional generator (c_dim={kwargs['c_dim']}); tlgan supports "
            f"unconditional StyleGAN2 (c_dim 0) only"
        )
    for key, value in {**mapping, **synthesis}.items():
        if key in _DEFAULTS and value != _DEFAULTS[key] and not (key == "embed_features" and value is None):
            raise TlganError(
                f"{source}: {key}={value!r} is not supported; tlgan's StyleGAN2 has {key}={_DEFAULTS[key]!r}"
            )
    known = {"num_layers", "lr_multiplier", "layer_features", "channel_base", "channel_max", "conv_clamp"}
    unknown = sorted((set(mapping) | set(synthesis)) - known - _IGNORED - set(_DEFAULTS))
    if unknown:
        raise TlganError(
            f"{source}: unknown generator settings {unknown}; this is not a StyleGAN2 network tlgan "
            f"knows (a StyleGAN3 network cannot be read as StyleGAN2)"
        )
    return {
        "z_dim": int(kwargs["z_dim"]),
        "w_dim": int(kwargs["w_dim"]),
        "img_resolution": int(kwargs["img_resolution"]),
        "img_channels": int(kwargs.get("img_channels", 3)),
        "channel_base": int(synthesis.get("channel_base", 32768)),
        "channel_max": int(synthesis.get("channel_max", 512)),
        "mapping_layers": int(mapping.get("num_layers", 8)),
        "mapping_lr": float(mapping.get("lr_multiplier", 0.01)),
        "mapping_features": None if mapping.get("layer_features") is None else int(mapping["layer_features"]),
        "conv_clamp": None if synthesis.get("conv_clamp") is None else float(synthesis["conv_clamp"]),
    }


def read(probe: Probe) -> Checkpoint:
    from tlgan.models.stylegan2 import lowpass_filter

    source = str(probe.path)
    data = load_networks(probe.path)
    G = data.get("G_ema")
    if not isinstance(G, PersistedModule):
        raise TlganError(f"{source}: no G_ema network in the pickle (it holds {sorted(map(str, data))})")
    if G.class_name != "Generator":
        raise TlganError(
            f"{source}: G_ema is a {G.class_name} network; tlgan reads StyleGAN2 and StyleGAN3 generators"
        )
    if is_stylegan3(G):
        return read_stylegan3(G, source)
    kwargs = generator_kwargs(G.init_kwargs, source)
    state: dict[str, torch.Tensor] = {}
    expected_filter = lowpass_filter()
    for key, tensor in G.tensors():
        if not isinstance(tensor, torch.Tensor):
            raise TlganError(f"{source}: {key} is a {type(tensor).__name__}, not a tensor")
        if key.endswith("resample_filter"):
            # tlgan computes this filter; a pickle with another one needs another network.
            if tensor.shape != expected_filter.shape or not torch.allclose(tensor.float(), expected_filter):
                raise TlganError(f"{source}: {key} is not the [1, 3, 3, 1] filter tlgan's StyleGAN2 uses")
            continue
        state[key] = tensor.detach().float().clone()
    return Checkpoint("StyleGAN2Generator", kwargs, state, format="nvlabs-pickle", info={"network": "G_ema"})


# ---- StyleGAN3 --------------------------------------------------------------------------------


def is_stylegan3(G: PersistedModule) -> bool:
    """Whether the generator's synthesis network starts from Fourier features (StyleGAN3)."""
    synthesis = (G.state.get("_modules") or {}).get("synthesis")
    child = (
        (synthesis.state.get("_modules") or {}).get("input")
        if isinstance(synthesis, PersistedModule)
        else None
    )
    return (isinstance(child, PersistedModule) and child.class_name == "SynthesisInput") or (
        "SynthesisInput" in G.module_src
    )


# NVlabs' StyleGAN3 constructor arguments that tlgan takes under the same name.
_SG3_SYNTHESIS = {
    "channel_base": int,
    "channel_max": int,
    "num_layers": int,
    "num_critical": int,
    "first_cutoff": float,
    "first_stopband": float,
    "last_stopband_rel": float,
    "margin_size": int,
    "output_scale": float,
    "conv_kernel": int,
    "filter_size": int,
    "lrelu_upsampling": int,
    "use_radial_filters": bool,
}
# Training and speed settings that do not change the images.
_SG3_IGNORED = {"num_fp16_res", "magnitude_ema_beta", "w_avg_beta", "fused_modconv_default"}


def stylegan3_kwargs(kwargs: dict[str, Any], source: str) -> dict[str, Any]:
    """NVlabs StyleGAN3 ``Generator`` constructor arguments -> :class:`StyleGAN3Generator` keyword arguments."""
    kwargs = dict(kwargs)
    mapping = dict(kwargs.pop("mapping_kwargs", None) or {})
    for key in ("z_dim", "w_dim", "img_resolution"):
        if key not in kwargs:
            raise TlganError(
                f"{source}: G_ema has no {key!r} among its constructor arguments; this is not a StyleGAN3 generator"
            )
    if int(kwargs.pop("c_dim", 0)) != 0:
        raise TlganError(
            f"{source}: a conditional generator; tlgan supports unconditional StyleGAN3 (c_dim 0) only"
        )
    unknown = sorted(
        (
            set(kwargs)
            - {"z_dim", "w_dim", "img_resolution", "img_channels", "conv_clamp"}
            - set(_SG3_SYNTHESIS)
        )
        - _SG3_IGNORED
    ) + sorted(f"mapping_kwargs.{k}" for k in set(mapping) - {"num_layers", "lr_multiplier"} - _SG3_IGNORED)
    if unknown:
        raise TlganError(
            f"{source}: unknown StyleGAN3 generator settings {unknown}; tlgan cannot build this network"
        )
    out: dict[str, Any] = {
        "z_dim": int(kwargs["z_dim"]),
        "w_dim": int(kwargs["w_dim"]),
        "img_resolution": int(kwargs["img_resolution"]),
        "img_channels": int(kwargs.get("img_channels", 3)),
        "mapping_layers": int(mapping.get("num_layers", 2)),
        "mapping_lr": float(mapping.get("lr_multiplier", 0.01)),
        # NVlabs' layers clamp at 256 unless told otherwise (None: no clamp).
        "conv_clamp": 256.0 if "conv_clamp" not in kwargs else kwargs["conv_clamp"],
    }
    out.update({k: cast(kwargs[k]) for k, cast in _SG3_SYNTHESIS.items() if k in kwargs})
    if out["conv_clamp"] is not None:
        out["conv_clamp"] = float(out["conv_clamp"])
    return out


def read_stylegan3(G: PersistedModule, source: str) -> Checkpoint:
    """The StyleGAN3 ``G_ema`` as a :class:`Checkpoint` of tlgan's ``StyleGAN3Generator``."""
    kwargs = stylegan3_kwargs(G.init_kwargs, source)
    state: dict[str, torch.Tensor] = {}
    for key, tensor in G.tensors():
        if not isinstance(tensor, torch.Tensor):
            raise TlganError(f"{source}: {key} is a {type(tensor).__name__}, not a tensor")
        state[key] = tensor.detach().float().clone()
    return Checkpoint("StyleGAN3Generator", kwargs, state, format="nvlabs-pickle", info={"network": "G_ema"})
