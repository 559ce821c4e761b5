"""NVlabs' TensorFlow network pickles: progressive_growing_of_gans (``karras2018iclr-celebahq-1024x1024.pkl``)
and StyleGAN (``karras2019stylegan-ffhq-1024x1024.pkl``), read without TensorFlow.

Such a ``.pkl`` holds the tuple ``(G, D, Gs)`` of network objects: ``tfutil.Network`` (PGGAN) or
``dnnlib.tflib.network.Network`` (StyleGAN). Each is pickled as its class plus the state its
``__getstate__`` returns: ``version`` (2, or 3 for dnnlib), ``name``, ``static_kwargs`` (the build
function's keyword arguments), ``build_module_src`` (the source of the module that builds the
graph: the normal loader runs it), ``build_func_name`` (``G_paper``, ``G_style``, ``G_mapping``,
``G_synthesis``), ``variables``, a list of (name relative to the network, NumPy array) pairs, and
for dnnlib ``components`` (sub-networks: StyleGAN's ``mapping`` and ``synthesis``).

Here both classes are data stand-ins (:class:`~tlgan.models.formats.unpickler.PickledObject`):
nothing from the file runs, the source is never looked at. ``Gs`` (the averaged generator) is
taken and its variables are renamed and reshaped into InterFaceGAN's PyTorch key names, the
names tlgan's networks use (:func:`pggan_table`, :func:`stylegan_table`, following InterFaceGAN's
published conversion), then read like a ``.pth`` (:mod:`tlgan.models.formats.genforce`).

Layouts: TF dense weights are (in, out), convolutions (K, K, in, out), PGGAN's fused kernels
(K, K, out, in); PyTorch's are (out, in) and (out, in, K, K). PGGAN's 4x4 dense layer
(z_dim, C * 16) becomes the 4x4 convolution (C, z_dim, 4, 4), flipped, that InterFaceGAN stores.
StyleGAN's truncation defaults are ``G_style``'s (psi 0.7, cutoff 8) unless the pickle's
``static_kwargs`` set others.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from tlgan.errors import TlganError
from tlgan.models.formats import Checkpoint, Probe
from tlgan.models.formats.unpickler import PickledObject, restricted_load

DESCRIPTION = "NVlabs TensorFlow PGGAN/StyleGAN .pkl"
NETWORK_CLASSES = ("tfutil.Network", "dnnlib.tflib.network.Network")
EASYDICT = ("dnnlib.util", "EasyDict")

# Rules turning a TF array into the PyTorch tensor (and back, in _to_tf): "same"; "dense" (in, out)
# -> (out, in); "conv" (K, K, in, out) -> (out, in, K, K); "pggan_fused" (K, K, out, in) -> (K, K, in,
# out); "pggan_dense" (z, C * 16) -> (C, z, 4, 4) flipped.


def _to_torch(rule: str, a: torch.Tensor) -> torch.Tensor:
    if rule == "dense":
        return a.t()
    if rule == "conv":
        return a.permute(3, 2, 0, 1)
    if rule == "pggan_fused":
        return a.permute(0, 1, 3, 2)
    if rule == "pggan_dense":
        return a.reshape(a.shape[0], -1, 4, 4).permute(1, 0, 2, 3).flip(2, 3)
    return a


def _to_tf(rule: str, t: torch.Tensor) -> torch.Tensor:
    if rule == "dense":
        return t.t()
    if rule == "conv":
        return t.permute(2, 3, 1, 0)
    if rule == "pggan_fused":
        return t.permute(0, 1, 3, 2)
    if rule == "pggan_dense":
        return t.flip(2, 3).permute(1, 0, 2, 3).reshape(t.shape[1], -1)
    return t


def pggan_table(resolution_log2: int, fused: bool) -> list[tuple[str, str, str]]:
    """Rows (TF variable of ``G_paper``, tlgan key, rule) for a PGGAN of side 2**resolution_log2."""
    rows = [
        ("lod", "lod", "same"),
        ("4x4/Dense/weight", "layer0.conv.weight", "pggan_dense"),
        ("4x4/Dense/bias", "layer0.wscale.bias", "same"),
        ("4x4/Conv/weight", "layer1.conv.weight", "conv"),
        ("4x4/Conv/bias", "layer1.wscale.bias", "same"),
    ]
    for level in range(1, resolution_log2 - 1):
        res = 4 * 2**level
        if fused:
            rows.append((f"{res}x{res}/Conv0_up/weight", f"layer{2 * level}.weight", "pggan_fused"))
            rows.append((f"{res}x{res}/Conv0_up/bias", f"layer{2 * level}.wscale.bias", "same"))
        else:
            rows.append((f"{res}x{res}/Conv0/weight", f"layer{2 * level}.conv.weight", "conv"))
            rows.append((f"{res}x{res}/Conv0/bias", f"layer{2 * level}.wscale.bias", "same"))
        rows += [
            (f"{res}x{res}/Conv1/weight", f"layer{2 * level + 1}.conv.weight", "conv"),
            (f"{res}x{res}/Conv1/bias", f"layer{2 * level + 1}.wscale.bias", "same"),
        ]
    for level in range(resolution_log2 - 1):
        lod = resolution_log2 - 2 - level
        rows += [
            (f"ToRGB_lod{lod}/weight", f"output{level}.conv.weight", "conv"),
            (f"ToRGB_lod{lod}/bias", f"output{level}.wscale.bias", "same"),
        ]
    return rows


def stylegan_table(
    resolution_log2: int, mapping_layers: int, fused_levels: list[bool]
) -> dict[str, list[tuple[str, str, str]]]:
    """Rows (TF variable, tlgan key, rule) per network of ``G_style``: "Gs", "mapping", "synthesis".

    ``fused_levels[k]`` says whether level k's upsampling layer is fused (k = 0 has none).
    """
    mapping = []
    for i in range(mapping_layers):
        mapping += [
            (f"Dense{i}/weight", f"mapping.dense{i}.linear.weight", "dense"),
            (f"Dense{i}/bias", f"mapping.dense{i}.wscale.bias", "same"),
        ]
    synthesis = [("4x4/Const/const", "synthesis.layer0.first_layer", "same")]
    for layer in range(2 * (resolution_log2 - 1)):
        level, res = layer // 2, 4 * 2 ** (layer // 2)
        scope = f"{res}x{res}/" + (
            "Const" if layer == 0 else "Conv" if layer == 1 else "Conv0_up" if layer % 2 == 0 else "Conv1"
        )
        own = f"synthesis.layer{layer}"
        if layer > 0:
            fused = layer % 2 == 0 and fused_levels[level]
            synthesis.append(
                (
                    f"{scope}/weight",
                    f"{own}.weight" if fused else f"{own}.conv.weight",
                    "same" if fused else "conv",
                )
            )
        synthesis += [
            (f"noise{layer}", f"{own}.epilogue.apply_noise.noise", "same"),
            (f"{scope}/Noise/weight", f"{own}.epilogue.apply_noise.weight", "same"),
            (f"{scope}/bias", f"{own}.epilogue.bias", "same"),
            (f"{scope}/StyleMod/weight", f"{own}.epilogue.style_mod.dense.linear.weight", "dense"),
            (f"{scope}/StyleMod/bias", f"{own}.epilogue.style_mod.dense.wscale.bias", "same"),
        ]
    for level in range(resolution_log2 - 1):
        lod = resolution_log2 - 2 - level
        synthesis += [
            (f"ToRGB_lod{lod}/weight", f"synthesis.output{level}.conv.weight", "conv"),
            (f"ToRGB_lod{lod}/bias", f"synthesis.output{level}.bias", "same"),
        ]
    # G_style assigns its own lod to the synthesis network's before every run: Gs's is the one used.
    gs = [("dlatent_avg", "truncation.w_avg", "same"), ("lod", "synthesis.lod", "same")]
    return {"Gs": gs, "mapping": mapping, "synthesis": synthesis}


# ---- reading the pickle ---------------------------------------------------------------------


class Network:
    """A pickled TF network as data: build function name, keyword arguments, variables, sub-networks."""

    def __init__(self, obj: Any, where: str, source: str):
        state = obj.state if isinstance(obj, PickledObject) else None
        if not isinstance(state, dict) or "variables" not in state:
            raise TlganError(f"{source}: {where} is a {type(obj).__name__}, not a pickled TensorFlow network")
        self.name = str(state.get("name"))
        self.version = state.get("version")
        self.build_func_name = str(state.get("build_func_name"))
        self.static_kwargs = dict(state.get("static_kwargs") or {})
        self.variables: dict[str, np.ndarray] = {}
        for entry in state["variables"]:
            if not (isinstance(entry, (tuple, list)) and len(entry) == 2 and isinstance(entry[0], str)):
                raise TlganError(f"{source}: {where}'s variables are not (name, array) pairs")
            self.variables[entry[0]] = np.asarray(entry[1])
        self.components = {
            str(k): Network(v, f"{where}.{k}", source) for k, v in (state.get("components") or {}).items()
        }


def load_networks(path) -> tuple[Network, ...]:
    """The pickle's (G, D, Gs) as :class:`Network` data (nothing from the file is run)."""
    source = str(path)
    with open(path, "rb") as f:
        data = restricted_load(f, functions={EASYDICT: dict}, data_classes=NETWORK_CLASSES, source=source)
    if not isinstance(data, tuple) or len(data) != 3:
        raise TlganError(
            f"{source}: the pickle holds a {type(data).__name__}, not the (G, D, Gs) tuple of "
            f"NVlabs' TensorFlow network pickles"
        )
    return tuple(Network(net, name, source) for net, name in zip(data, ("G", "D", "Gs"), strict=True))


def _apply(
    rows: list[tuple[str, str, str]], variables: dict[str, np.ndarray], where: str, source: str
) -> dict[str, torch.Tensor]:
    out = {}
    for tf_name, own, rule in rows:
        if tf_name not in variables:
            raise TlganError(
                f"{source}: {where} lacks the variable {tf_name!r}; the pickle is incomplete or "
                f"another architecture"
            )
        out[own] = _to_torch(rule, torch.from_numpy(np.array(variables[tf_name], dtype=np.float32)))
    left = sorted(set(variables) - {r[0] for r in rows})
    if left:
        raise TlganError(f"{source}: {where} has variables tlgan does not know: {left[:5]}")
    return out


def _resolution_log2(kwargs: dict[str, Any], variables: dict[str, np.ndarray], source: str) -> int:
    lods = [int(n[len("ToRGB_lod") :].split("/")[0]) for n in variables if n.startswith("ToRGB_lod")]
    if not lods:
        raise TlganError(
            f"{source}: Gs has no ToRGB_lod* variables; this is not a PGGAN or StyleGAN generator"
        )
    log2 = max(lods) + 2
    if "resolution" in kwargs and int(kwargs["resolution"]) != 2**log2:
        raise TlganError(
            f"{source}: resolution {kwargs['resolution']} does not match its {max(lods) + 1} levels"
        )
    return log2


def _check_unconditional(kwargs: dict[str, Any], source: str) -> None:
    if int(kwargs.get("label_size", 0) or 0):
        raise TlganError(
            f"{source}: a conditional generator (label_size={kwargs['label_size']}); tlgan reads "
            f"unconditional ones only"
        )


def read_pggan(gs: Network, source: str) -> dict[str, torch.Tensor]:
    _check_unconditional(gs.static_kwargs, source)
    log2 = _resolution_log2(gs.static_kwargs, gs.variables, source)
    fused = any(name.endswith("/Conv0_up/weight") for name in gs.variables)
    return _apply(pggan_table(log2, fused), gs.variables, "Gs", source)


def read_stylegan(gs: Network, source: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    from tlgan.models.stylegan1 import uses_fused_scale

    mapping, synthesis = gs.components.get("mapping"), gs.components.get("synthesis")
    if mapping is None or synthesis is None:
        raise TlganError(
            f"{source}: Gs has no mapping and synthesis components; this is not a StyleGAN pickle"
        )
    kwargs = {**gs.static_kwargs, **synthesis.static_kwargs}
    _check_unconditional({**kwargs, **mapping.static_kwargs}, source)
    log2 = _resolution_log2(kwargs, synthesis.variables, source)
    fused_scale = kwargs.get("fused_scale", "auto")
    fused_levels = [False] + [uses_fused_scale(fused_scale, 4 * 2**k) for k in range(1, log2 - 1)]
    mapping_layers = len([n for n in mapping.variables if n.startswith("Dense") and n.endswith("/weight")])
    table = stylegan_table(log2, mapping_layers, fused_levels)
    state: dict[str, torch.Tensor] = {}
    state.update(_apply(table["mapping"], mapping.variables, "Gs.mapping", source))
    # The synthesis network's own lod is overwritten by Gs's at run time; it is not read.
    synthesis_vars = {k: v for k, v in synthesis.variables.items() if k != "lod"}
    state.update(_apply(table["synthesis"], synthesis_vars, "Gs.synthesis", source))
    state.update(_apply(table["Gs"], gs.variables, "Gs", source))
    truncation = {
        k: gs.static_kwargs[k] for k in ("truncation_psi", "truncation_cutoff") if k in gs.static_kwargs
    }
    return state, truncation


def matches(probe: Probe) -> bool:
    return probe.suffix == ".pkl" and any(name in probe.pickle_globals for name in NETWORK_CLASSES)


def read(probe: Probe) -> Checkpoint:
    from tlgan.models.formats.genforce import checkpoint_from_state

    source = str(probe.path)
    _, _, gs = load_networks(probe.path)
    info = {"network": gs.build_func_name, "tf_network_version": gs.version}
    if gs.build_func_name == "G_paper":
        return checkpoint_from_state(read_pggan(gs, source), source, format="nvlabs-tf-pickle", info=info)
    if gs.build_func_name == "G_style":
        state, truncation = read_stylegan(gs, source)
        checkpoint = checkpoint_from_state(state, source, format="nvlabs-tf-pickle", info=info)
        num_ws = 2 * (int(math.log2(checkpoint.kwargs["img_resolution"])) - 1)
        psi = truncation.get("truncation_psi", checkpoint.kwargs["truncation_psi"])
        cutoff = truncation.get("truncation_cutoff", checkpoint.kwargs["truncation_cutoff"])
        if psi is None or cutoff is None or float(psi) == 1.0 or int(cutoff) <= 0:
            psi, cutoff = 1.0, None  # G_style's "None = disable"
        checkpoint.kwargs.update(
            truncation_psi=float(psi), truncation_cutoff=None if cutoff is None else min(int(cutoff), num_ws)
        )
        checkpoint.info["truncation"] = "static_kwargs" if truncation else "G_style default"
        return checkpoint
    raise TlganError(
        f"{source}: Gs is built by {gs.build_func_name!r}; tlgan reads G_paper (PGGAN) and "
        f"G_style (StyleGAN) networks"
    )
