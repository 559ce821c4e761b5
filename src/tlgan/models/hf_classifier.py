"""``hf-classifier:MODEL``: a transformers image-classification model as a tlgan classifier.

MODEL is a Hub id, ``hf://OWNER/REPO[@REVISION]`` or a local folder (``config.json`` +
weights + ``preprocessor_config.json``), resolved as for ``clip:`` (:mod:`tlgan.models.clip`).
The model's ``id2label`` names become the attributes. A multi-label model
(``problem_type == "multi_label_classification"``, e.g. a CelebA attribute predictor) gives
its logits as they are (read through a sigmoid); a single-label model gives, for each class k,
the one-vs-rest logit of its softmax, log p_k - log(1 - p_k) = z_k - logsumexp_{j != k} z_j.
Its preprocessing config (resize, centre crop, rescale, mean, std) is applied in torch,
differentiably; transformers is imported only when one is loaded (``pip install 'tlgan[clip]'``).
"""

from __future__ import annotations

import re

import torch

from tlgan.errors import TlganError
from tlgan.models.base import Classifier
from tlgan.models.clip import (
    check_images,
    from_pretrained,
    preprocessor_config,
    require_transformers,
    resize_center_crop,
    resolve_model,
)

# PIL's resampling codes, as image processors store them.
_MODES = {0: "nearest", 1: "bicubic", 2: "bilinear", 3: "bicubic", 4: "bilinear", 5: "bicubic"}


def attribute_names(id2label: dict) -> tuple[str, ...]:
    """``id2label`` in id order, each label made a usable attribute name (spaces and other signs
    become '_'); raises TlganError when two labels become the same name."""
    labels = [str(id2label[k]) for k in sorted(id2label, key=int)]
    names = [
        re.sub(r"[^A-Za-z0-9_.+-]+", "_", label).strip("_") or f"class_{i}" for i, label in enumerate(labels)
    ]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise TlganError(f"the model's labels give the same attribute name twice: {', '.join(dupes)}")
    return tuple(names)


class HFImageClassifier(Classifier):
    """A transformers ``AutoModelForImageClassification`` behind the Classifier contract.

    ``logits(images)``: images (N, 3, H, W) in [-1, 1] -> (N, A) logits, A = number of labels.
    ``preprocess`` is the model's ``preprocessor_config.json`` as a dict.
    """

    def __init__(self, model, preprocess: dict, name: str = "hf-classifier", source: str = ""):
        super().__init__()
        self.model = model
        self.name = name
        self.source = source
        config = model.config
        self.attributes = attribute_names(config.id2label)
        self.multi_label = config.problem_type == "multi_label_classification"
        image_size = getattr(config, "image_size", 224)
        size = preprocess.get("size", image_size)
        self.exact = isinstance(size, dict) and "height" in size
        if isinstance(size, dict):
            size = size.get("shortest_edge", size.get("height", image_size))
        self.resize_to = int(size) if preprocess.get("do_resize", True) else None
        crop = preprocess.get("crop_size", size)
        if isinstance(crop, dict):
            crop = crop.get("height", size)
        self.crop = int(crop) if preprocess.get("do_center_crop", not self.exact) else int(size)
        self.input_resolution = self.crop
        self.mode = _MODES.get(int(preprocess.get("resample", 2)), "bilinear")
        # tlgan images come as [0, 1] after rescaling, the same as pixels / 255 * rescale_factor * 255.
        self.rescale = (
            float(preprocess.get("rescale_factor", 1 / 255)) * 255
            if preprocess.get("do_rescale", True)
            else 255.0
        )
        normalize = preprocess.get("do_normalize", True)
        mean = preprocess.get("image_mean", [0.5, 0.5, 0.5]) if normalize else [0.0, 0.0, 0.0]
        std = preprocess.get("image_std", [0.5, 0.5, 0.5]) if normalize else [1.0, 1.0, 1.0]
        self.register_buffer(
            "mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False
        )
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def pixel_values(self, images: torch.Tensor) -> torch.Tensor:
        """Images (N, 3, H, W) in [-1, 1] -> the model's input; differentiable."""
        x = (check_images(images).to(self.mean) + 1.0) / 2.0
        if self.resize_to is not None:
            x = resize_center_crop(x, self.resize_to, self.crop, mode=self.mode, exact=self.exact)
        return (x.clamp(0.0, 1.0) * self.rescale - self.mean) / self.std

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        out = self.model(pixel_values=self.pixel_values(images)).logits.float()
        if self.multi_label or out.shape[1] == 1:
            return out
        # one-vs-rest logit of the softmax: z_k - logsumexp over the other classes
        others = out.unsqueeze(1).expand(-1, out.shape[1], -1).clone()
        eye = torch.eye(out.shape[1], dtype=torch.bool, device=out.device)
        others = others.masked_fill(eye, float("-inf"))
        return out - torch.logsumexp(others, dim=-1)

    def features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """[the last hidden state pooled over positions, (N, F)] for perceptual losses."""
        out = self.model(pixel_values=self.pixel_values(images), output_hidden_states=True)
        hidden = out.hidden_states[-1]
        return [hidden.flatten(2).mean(-1) if hidden.ndim == 4 else hidden.mean(1)]


def load_hf_classifier(model: str, device: str = "cpu") -> HFImageClassifier:
    """An :class:`HFImageClassifier` from MODEL (Hub id, hf://OWNER/REPO[@REV] or folder)."""
    transformers = require_transformers()
    if not model.strip():
        raise TlganError(
            "hf-classifier: needs a model, e.g. hf-classifier:OWNER/REPO or hf-classifier:path/to/folder"
        )
    path, revision = resolve_model(model)
    net = from_pretrained(
        transformers.AutoModelForImageClassification, path, revision, "image-classification model"
    )
    if not getattr(net.config, "id2label", None):
        raise TlganError(f"{model}: its config has no id2label; tlgan names attributes from it")
    return HFImageClassifier(
        net.float().eval().requires_grad_(False), preprocessor_config(path, revision), name=path, source=model
    ).to(device)
