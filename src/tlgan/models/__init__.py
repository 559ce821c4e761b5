"""Generators and classifiers: the contracts, the registries, and loading from a spec.

A *spec* is what ``--generator`` / ``--classifier`` take on the command line:

- a registered name (``tlgan models`` lists them), e.g. ``toyfaces-gan``;
- a folder holding ``model.json`` + ``model.safetensors`` written by tlgan's training commands,
  or ``tuned.json`` + ``tuned.safetensors`` written by ``tlgan invert --tune`` (the base spec it
  names is loaded, then the tuned tensors);
- a checkpoint file of a known format (:mod:`tlgan.models.formats`): NVlabs StyleGAN2/StyleGAN3 ``.pkl``,
  rosinality ``.pt``, InterFaceGAN's PGGAN/StyleGAN ``.pth``, NVlabs' TensorFlow PGGAN/StyleGAN
  ``.pkl``; read without running code from the file;
- a TorchScript file (``.pt``/``.ts``/``.torchscript``), loaded with ``torch.jit.load``;
- ``hf://OWNER/REPO/PATH[@REVISION]``: a file of a Hugging Face Hub repository (any of the
  above), fetched into the Hub's standard cache (offline with ``HF_HUB_OFFLINE=1`` once cached);
- a URL (``https://``, ``file://``) of a folder holding ``model.json`` + ``model.safetensors``, fetched once
  into ``$TLGAN_CACHE/weights/``; append ``#sha256=HEX`` to check the weights' hash;
- ``path/to/file.py:factory``: a Python file of your own and a function in it that returns
  a :class:`Generator` / :class:`Classifier` (or a module plus keyword arguments; see docs);
- classifiers only: ``clip:MODEL`` (attributes in words, :mod:`tlgan.models.clip`) and
  ``hf-classifier:MODEL`` (a transformers image-classification model,
  :mod:`tlgan.models.hf_classifier`); MODEL is a Hub id, ``hf://OWNER/REPO[@REV]`` or a folder.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable
from pathlib import Path

import torch

from tlgan.errors import TlganError
from tlgan.models.base import Classifier, Generator, ModuleClassifier, ModuleGenerator
from tlgan.registry import Registry

# The built-in models (tlgan.models.zoo) register themselves on the first lookup.
GENERATORS: Registry[Generator] = Registry("generator", builtins="tlgan.models.zoo")
CLASSIFIERS: Registry[Classifier] = Registry("classifier", builtins="tlgan.models.zoo")

TORCHSCRIPT_SUFFIXES = (".pt", ".ts", ".torchscript", ".jit")


def _load_factory_file(spec: str) -> Callable:
    path_text, _, func_name = spec.rpartition(":")
    path = Path(path_text)
    if not path.is_file():
        raise TlganError(f"{path}: file not found (from spec {spec!r}; expected path/to/file.py:factory)")
    module_spec = importlib.util.spec_from_file_location(f"tlgan_user_{path.stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)  # the user's own code, named explicitly by them
    factory = getattr(module, func_name, None)
    if not callable(factory):
        raise TlganError(f"{path} has no function {func_name!r}")
    return factory


def _from_torchscript(path: Path, kind: str):
    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:  # torch raises several types for bad archives
        raise TlganError(
            f"{path}: not a loadable TorchScript file ({type(exc).__name__}); export it with torch.jit.save"
        ) from None
    meta_path = path.with_suffix(".json")
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    if kind == "generator":
        return ModuleGenerator(
            module,
            z_dim=int(meta.get("z_dim", 512)),
            output_range=tuple(meta.get("output_range", (-1, 1))),
            name=path.stem,
        )
    if "attributes" not in meta:
        raise TlganError(
            f'{path}: a TorchScript classifier needs {meta_path.name} beside it listing its "attributes"'
        )
    return ModuleClassifier(
        module,
        meta["attributes"],
        input_resolution=int(meta.get("input_resolution", 64)),
        input_range=tuple(meta.get("input_range", (-1, 1))),
        output=meta.get("output", "logits"),
        name=path.stem,
    )


def _fetch_folder(spec: str) -> Path:
    """Download ``model.json`` and ``model.safetensors`` from a folder URL into the cache."""
    import hashlib

    from tlgan.models.hub import WeightsInfo, default_cache, fetch

    base, _, fragment = spec.partition("#")
    sha = fragment.split("=", 1)[1] if fragment.startswith("sha256=") else None
    base = base.rstrip("/")
    cache = default_cache() / hashlib.sha256(base.encode()).hexdigest()[:16]
    fetch(WeightsInfo(f"{base}/model.json"), cache)
    fetch(WeightsInfo(f"{base}/model.safetensors", sha), cache)
    return cache


def _load(spec: str, kind: str, registry: Registry, base: type, device: str):
    spec = str(spec)
    if spec.startswith("hf://"):
        from tlgan.models.hub import hf_file

        spec = str(hf_file(spec))
    path = Path(spec)
    if spec in registry:
        model = registry.create(spec)
    elif spec.split("://", 1)[0] in ("http", "https", "file"):
        from tlgan.models.formats.folder import load_pretrained

        model = load_pretrained(_fetch_folder(spec))
    elif ".py:" in spec:
        model = _load_factory_file(spec)()
    elif path.is_dir() and (path / "tuned.json").is_file():
        from tlgan.models.formats.tuned import load_tuned_folder

        model = load_tuned_folder(path)
    elif path.is_dir() and (path / "model.json").is_file():
        from tlgan.models.formats.folder import load_pretrained

        model = load_pretrained(path)
    elif path.is_file() and _is_checkpoint(path):
        from tlgan.models.formats import load_checkpoint

        model = load_checkpoint(path)
    elif path.suffix in TORCHSCRIPT_SUFFIXES and path.is_file():
        model = _from_torchscript(path, kind)
    elif path.exists():
        raise TlganError(
            f"{path}: not a {kind} tlgan can load; give a registered name, a folder with model.json, "
            f"a checkpoint (NVlabs StyleGAN2/3 .pkl, rosinality .pt, InterFaceGAN .pth), a TorchScript file "
            f"({'/'.join(TORCHSCRIPT_SUFFIXES)}) or path/to/file.py:factory"
        )
    else:
        registry.check(spec)  # raises with close matches
    if not isinstance(model, base):
        raise TlganError(
            f"{spec!r} gave a {type(model).__name__}, not a tlgan {base.__name__}; wrap a plain module with "
            f"tlgan.models.Module{base.__name__}"
        )
    return model.to(device).eval()


def _is_checkpoint(path: Path) -> bool:
    from tlgan.models.formats import is_checkpoint

    return is_checkpoint(path)


def load_generator(spec: str, device: str = "cpu", **options) -> Generator:
    """Build the generator named by ``spec`` (see module docs) on ``device``, in eval mode.

    The result is a :class:`Generator`: ``G.sample_latents(n, seed, space)`` gives latents
    ((n, z_dim) in "z", (n, w_dim) in "w", (n, num_ws, w_dim) in "wp" for generators with a
    mapping network), ``G.synthesize(latents, space)`` images (n, 3, R, R) in [-1, 1].
    ``options`` are load-time settings of generators that have them, e.g. StyleGAN2's
    ``truncation_psi=0.7``, ``truncation_cutoff=8``, ``noise_mode="const"``, or StyleGAN3's
    ``input_transform`` (3 x 3, as NVlabs stores it); ``None`` values are ignored, and a
    generator without such settings refuses any other.

    Raises TlganError for an unknown name (with close matches), a missing or unreadable file,
    a checkpoint of an unknown format or with missing/extra keys, a factory that returns
    something else than a Generator, and unknown options.
    """
    generator = _load(spec, "generator", GENERATORS, Generator, device)
    return generator.configure(**{k: v for k, v in options.items() if v is not None})


TRANSFORMERS_PREFIXES = ("clip:", "hf-classifier:")


def load_classifier(spec: str, device: str = "cpu", attributes=None) -> Classifier:
    """Build the classifier named by ``spec`` (see module docs) on ``device``, in eval mode.

    The result is a :class:`Classifier`: ``F.logits(images)`` turns images (N, 3, H, W) in
    [-1, 1] (resized to ``F.input_resolution``) into logits (N, A), one per name in
    ``F.attributes``. ``attributes`` (``clip:`` only) are its attributes in words, in place of
    the model's own: {name: Prompt or {"positive", "negative", "templates"}} or a list of
    ``"Name=positive|negative"``. Raises TlganError as :func:`load_generator` does, and for
    ``attributes`` given to another classifier.
    """
    if attributes and not str(spec).startswith("clip:"):
        raise TlganError(
            f"attributes in words (--attribute / --attributes) need a CLIP classifier, not {spec!r}; "
            f"pass --classifier clip:MODEL (clip: alone is the bundled toyfaces-clip)"
        )
    if str(spec).startswith(TRANSFORMERS_PREFIXES):
        kind, _, model = str(spec).partition(":")
        if kind == "clip":
            from tlgan.models.clip import load_clip

            return load_clip(model, prompts=attributes or None, device=device).eval()
        from tlgan.models.hf_classifier import load_hf_classifier

        return load_hf_classifier(model, device=device).eval()
    return _load(spec, "classifier", CLASSIFIERS, Classifier, device)


def list_models() -> dict:
    """{"generators": {name: description}, "classifiers": {name: description}} of the registries."""
    return {
        "generators": {n: GENERATORS.describe(n) for n in GENERATORS.names()},
        "classifiers": {n: CLASSIFIERS.describe(n) for n in CLASSIFIERS.names()},
    }


__all__ = [
    "Generator",
    "Classifier",
    "ModuleGenerator",
    "ModuleClassifier",
    "GENERATORS",
    "CLASSIFIERS",
    "load_generator",
    "load_classifier",
    "list_models",
]
