"""CLIP as a classifier: attributes named in words, scored by a transformers ``CLIPModel``.

``load_classifier("clip:MODEL")`` builds a :class:`CLIPClassifier`. MODEL is

- a Hugging Face Hub id (``openai/clip-vit-base-patch32``), loaded from the Hub's standard cache
  (``HF_HOME`` / ``HF_HUB_CACHE``; ``HF_HUB_OFFLINE=1`` never touches the network);
- ``hf://OWNER/REPO[@REVISION]``, the same with a pinned revision;
- a local folder in transformers' format (``config.json`` + ``model.safetensors`` + tokenizer files);
- nothing (``clip:``) or ``toyfaces-clip``: the small CLIP bundled with tlgan, trained on toyfaces.

An attribute is a pair of phrases: its logit for an image is the model's logit scale x
(cos(image, positive) - cos(image, negative)). A phrase may be an ensemble of templates
(``"a photo of {}"``), averaged on the unit sphere as CLIP's authors do. Since the logit is
linear in the normalised image embedding, a run that stores the embeddings (N, D) scores any
new attribute with one text forward and one (N, D) x (D, 1) product: :meth:`embed_images`,
:meth:`text_directions` and :meth:`logits_from_embeddings` are that split.

Preprocessing is done in torch (differentiable, batched; no torchvision): images in [-1, 1],
shortest side resized to the model's input size (bicubic, antialiased), centre crop, the
model's mean and std. transformers is imported only here: ``pip install 'tlgan[clip]'``.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from tlgan.errors import TlganError
from tlgan.models.base import Classifier

BUNDLED = "toyfaces-clip"
NEUTRAL_NEGATIVE = "a photo"
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
PROMPTS_FILE = "tlgan_prompts.json"
_NAME = re.compile(r"[A-Za-z0-9_.+-]+")


def require_transformers():
    """Import transformers, or raise a TlganError that says how to install it."""
    try:
        import transformers
    except ImportError:
        raise TlganError(
            "CLIP and Hugging Face classifiers need transformers: pip install 'tlgan[clip]' "
            "(never transformers[vision] or torchvision: tlgan preprocesses in torch)"
        ) from None
    return transformers


@dataclass(frozen=True)
class Prompt:
    """An attribute in words: ``positive`` and ``negative`` phrases, each expanded by ``templates``
    (strings with one ``{}``; none = the phrase as written), the expansions averaged."""

    positive: str
    negative: str = NEUTRAL_NEGATIVE
    templates: tuple[str, ...] = ()

    def texts(self, which: str) -> list[str]:
        phrase = self.positive if which == "positive" else self.negative
        return [t.format(phrase) for t in self.templates] if self.templates else [phrase]

    def to_json(self) -> dict:
        return {"positive": self.positive, "negative": self.negative, "templates": list(self.templates)}


def check_attribute_name(name: str) -> str:
    """``name`` if it is a usable attribute name (letters, digits, '_', '-', '.', '+'), else TlganError."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise TlganError(
            f"attribute name {name!r} is not usable: use letters, digits, '_', '-', '.', '+' "
            f"(it names files and columns), e.g. Beard=a photo of a person with a beard"
        )
    return name


def parse_attribute(text: str) -> tuple[str, Prompt]:
    """``"Name=positive phrase|negative phrase"`` (negative optional) -> (name, Prompt)."""
    name, eq, phrases = str(text).partition("=")
    if not eq:
        raise TlganError(
            f"attribute {text!r} has no '=': write NAME=POSITIVE PHRASE|NEGATIVE PHRASE, "
            f"e.g. 'Beard=a photo of a person with a beard|a photo of a clean-shaven person'"
        )
    positive, bar, negative = phrases.partition("|")
    prompt = Prompt(positive.strip(), negative.strip() if bar else NEUTRAL_NEGATIVE)
    _check_phrases(name.strip(), prompt)
    return check_attribute_name(name.strip()), prompt


def _check_phrases(name: str, prompt: Prompt) -> None:
    for which in ("positive", "negative"):
        if not getattr(prompt, which).strip():
            raise TlganError(f"attribute {name!r}: the {which} phrase is empty; write a few words")
    for template in prompt.templates:
        if not isinstance(template, str) or template.count("{}") != 1:
            raise TlganError(f"attribute {name!r}: template {template!r} must hold exactly one '{{}}'")


def load_prompts(source: str | os.PathLike | Mapping) -> dict[str, Prompt]:
    """Prompts from a JSON file (or its parsed mapping): {name: {"positive", "negative"?, "templates"?}}.

    A value may also be a plain string (the positive phrase) or a [positive, negative] list.
    Raises TlganError for a missing file, bad JSON, a bad name or an empty phrase.
    """
    if isinstance(source, Mapping):
        data, where = source, "prompts"
    else:
        path = Path(source)
        if not path.is_file():
            raise TlganError(f"{path}: attributes file not found")
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise TlganError(
                f"{path}: not valid JSON ({exc}); see `tlgan sample --help` for the format"
            ) from None
        where = str(path)
    if not isinstance(data, Mapping) or not data:
        raise TlganError(f"{where}: expected a JSON object {{name: {{positive, negative, templates}}}}")
    out = {}
    for name, value in data.items():
        if isinstance(value, str):
            prompt = Prompt(value.strip())
        elif isinstance(value, (list, tuple)) and len(value) == 2:
            prompt = Prompt(str(value[0]).strip(), str(value[1]).strip())
        elif isinstance(value, Mapping) and "positive" in value:
            prompt = Prompt(
                str(value["positive"]).strip(),
                str(value.get("negative", NEUTRAL_NEGATIVE)).strip(),
                tuple(value.get("templates", ())),
            )
        else:
            raise TlganError(f"{where}: attribute {name!r} needs a positive phrase (and optionally negative)")
        _check_phrases(name, prompt)
        out[check_attribute_name(name)] = prompt
    return out


def as_prompts(prompts: Mapping[str, Prompt | str] | Sequence[str]) -> dict[str, Prompt]:
    """{name: Prompt} from {name: Prompt or its JSON form (see :func:`load_prompts`)} or from a list
    of ``"Name=positive|negative"`` strings. Raises TlganError for a bad name, an empty phrase or
    a name given twice."""
    if isinstance(prompts, Mapping):
        parsed = {n: p for n, p in prompts.items() if isinstance(p, Prompt)}
        for name, prompt in parsed.items():
            check_attribute_name(name)
            _check_phrases(name, prompt)
        rest = {n: p for n, p in prompts.items() if not isinstance(p, Prompt)}
        parsed.update(load_prompts(rest) if rest else {})
        return parsed
    parsed = {}
    for text in prompts:
        name, prompt = parse_attribute(text)
        if name in parsed:
            raise TlganError(f"attribute {name!r} is given twice")
        parsed[name] = prompt
    return parsed


def bundled_path(name: str = BUNDLED) -> Path:
    return Path(__file__).parent / "weights" / name


def resolve_model(model: str) -> tuple[str, str | None]:
    """MODEL of a ``clip:`` / ``hf-classifier:`` spec -> (folder or Hub id, revision or None)."""
    model = model.strip()
    if model in ("", BUNDLED):
        path = bundled_path()
        if not (path / "config.json").is_file():
            raise TlganError(f"the bundled {BUNDLED} is missing from {path}; reinstall tlgan")
        return str(path), None
    if model.startswith("hf://"):
        repo, _, revision = model[len("hf://") :].partition("@")
        if repo.count("/") != 1:
            raise TlganError(f"{model}: write hf://OWNER/REPO[@REVISION] (a whole repository, not a file)")
        return repo, revision or None
    if Path(model).is_dir():
        return model, None
    if Path(model).exists() or model.count("/") != 1 or model.startswith((".", "/")):
        raise TlganError(
            f"{model!r}: not a folder in transformers' format and not a Hub id (OWNER/REPO); "
            f"e.g. clip:openai/clip-vit-base-patch32, or clip: for the bundled {BUNDLED}"
        )
    return model, None


def from_pretrained(cls, model: str, revision: str | None, what: str):
    """``cls.from_pretrained`` with errors that name the cache and ``HF_HUB_OFFLINE`` (and without
    transformers' per-tensor progress bar, which would interleave with tlgan's own)."""
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        return cls.from_pretrained(model, revision=revision)
    except (OSError, ValueError) as exc:
        if Path(model).is_dir():
            raise TlganError(f"{model}: cannot load its {what} ({str(exc).splitlines()[0][:300]})") from None
        from huggingface_hub import constants

        offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
        if offline:
            raise TlganError(
                f"{model}: its {what} is not in the Hugging Face cache ({constants.HF_HUB_CACHE}) and "
                f"HF_HUB_OFFLINE=1 forbids downloading it; run once with network access (unset "
                f"HF_HUB_OFFLINE), or point HF_HOME / HF_HUB_CACHE at a cache that holds it"
            ) from None
        raise TlganError(
            f"{model}: could not load its {what} from the Hub or the cache ({constants.HF_HUB_CACHE}): "
            f"{str(exc).splitlines()[0][:300]}; check the id, or set HF_HUB_OFFLINE=1 to use the cache only"
        ) from None
    finally:
        if bars:
            hf_logging.enable_progress_bar()


def preprocessor_config(model: str, revision: str | None) -> dict:
    """The model's ``preprocessor_config.json`` as a dict ({} when it has none)."""
    if Path(model).is_dir():
        path = Path(model) / "preprocessor_config.json"
        return json.loads(path.read_text()) if path.is_file() else {}
    try:
        from huggingface_hub import hf_hub_download

        return json.loads(
            Path(hf_hub_download(model, "preprocessor_config.json", revision=revision)).read_text()
        )
    except Exception:  # no such file, or offline without it cached: the defaults apply
        return {}


def _size(value, default: int) -> int:
    if isinstance(value, Mapping):
        value = value.get("shortest_edge", value.get("height", default))
    return int(value) if value else default


def resize_center_crop(
    images: torch.Tensor, size: int, crop: int, mode: str = "bicubic", exact: bool = False
) -> torch.Tensor:
    """(N, 3, H, W) -> (N, 3, crop, crop): shortest side to ``size`` (or both sides when ``exact``),
    antialiased, then the centre ``crop``; nothing is done when the size already fits."""
    h, w = images.shape[-2:]
    if exact:
        new = (size, size)
    else:
        scale = size / min(h, w)
        new = (size, round(w * scale)) if h <= w else (round(h * scale), size)
    if tuple(new) != (h, w):
        images = F.interpolate(images, size=new, mode=mode, align_corners=False, antialias=True)
    h, w = images.shape[-2:]
    if crop > h or crop > w:
        raise TlganError(
            f"the crop ({crop} px) is larger than the resized image ({h}x{w}); the config is wrong"
        )
    top, left = (h - crop) // 2, (w - crop) // 2
    return images[..., top : top + crop, left : left + crop]


def check_images(images: torch.Tensor) -> torch.Tensor:
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise TlganError(f"images must be an (N, 3, H, W) tensor in [-1, 1]; got {shape}")
    return images


class CLIPClassifier(Classifier):
    """Attributes in words, scored by a CLIP model. ``logits(images)`` -> (N, A).

    ``model`` is a transformers ``CLIPModel``, ``tokenizer`` its tokenizer; ``prompts`` maps
    attribute names to :class:`Prompt`. ``image_size`` / ``crop_size`` / ``mean`` / ``std``
    describe its preprocessing. Raises TlganError when the tokenizer's end-of-text token is not
    the one the text tower pools at (every prompt would embed alike).
    """

    def __init__(
        self,
        model,
        tokenizer,
        prompts: Mapping[str, Prompt] | None = None,
        *,
        image_size: int,
        crop_size: int | None = None,
        mean: Sequence[float] = OPENAI_MEAN,
        std: Sequence[float] = OPENAI_STD,
        name: str = "clip",
        source: str = "",
    ):
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.source = source
        self.image_size = int(image_size)
        self.crop_size = int(crop_size or image_size)
        self.input_resolution = self.crop_size
        self.register_buffer(
            "mean", torch.tensor(list(mean), dtype=torch.float32).view(1, 3, 1, 1), persistent=False
        )
        self.register_buffer(
            "std", torch.tensor(list(std), dtype=torch.float32).view(1, 3, 1, 1), persistent=False
        )
        self.context_length = int(model.config.text_config.max_position_embeddings)
        self._check_tokenizer()
        self.prompts: dict[str, Prompt] = {}
        self.register_buffer("directions", torch.zeros(0, model.config.projection_dim), persistent=False)
        if prompts:
            self._add(prompts)

    # -- the spec a worker needs to rebuild it ---------------------------------------------
    @property
    def attributes(self) -> tuple[str, ...]:
        return tuple(self.prompts)

    @property
    def embedding_dim(self) -> int:
        return int(self.model.config.projection_dim)

    def describe(self) -> dict:
        """What rebuilds this classifier: {"spec", "prompts": {name: Prompt.to_json()}}."""
        return {"spec": f"clip:{self.source}", "prompts": {a: p.to_json() for a, p in self.prompts.items()}}

    # -- text --------------------------------------------------------------------------------
    def _check_tokenizer(self) -> None:
        config_eos = self.model.config.text_config.eos_token_id
        tok_eos = self.tokenizer.eos_token_id
        ids = self.tokenizer("a photo")["input_ids"]
        if config_eos == 2:  # older configs: the text tower pools at the largest id of each text
            ok = (
                tok_eos is not None
                and tok_eos == max(self.tokenizer.get_vocab().values())
                and ids[-1] == tok_eos
            )
            rule = "pools at the largest token id (eos_token_id=2 in its config), which must be the end-of-text id"
        else:
            ok = tok_eos == config_eos and bool(ids) and ids[-1] == tok_eos
            rule = f"pools at token id {config_eos} (text_config.eos_token_id)"
        if not ok:
            raise TlganError(
                f"CLIP model {self.source or self.name!r}: its tokenizer's end-of-text id ({tok_eos}) disagrees "
                f"with the text tower, which {rule}; the pooled token would be wrong and every prompt "
                f"would embed alike. Use the tokenizer saved with the model, or set text_config.eos_token_id "
                f"in config.json to the tokenizer's end-of-text id"
            )

    def _tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        ids = self.tokenizer(list(texts))["input_ids"]
        for text, row in zip(texts, ids, strict=True):
            if not text.strip():
                raise TlganError("a phrase is empty; write a few words")
            if len(row) > self.context_length:
                raise TlganError(
                    f"phrase {text[:80]!r} is {len(row)} tokens long; this CLIP reads at most "
                    f"{self.context_length} (its context length): shorten it"
                )
        return self.tokenizer.pad({"input_ids": ids}, return_tensors="pt")

    def embed_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """Normalised text embeddings (T, D), float32. Raises TlganError for an empty or too long phrase."""
        enc = self._tokenize(texts)
        device = self.mean.device
        with torch.no_grad():
            out = self.model.text_model(
                input_ids=enc["input_ids"].to(device), attention_mask=enc["attention_mask"].to(device)
            )
            return F.normalize(self.model.text_projection(out.pooler_output).float(), dim=-1)

    def text_directions(self, prompts: Mapping[str, Prompt]) -> torch.Tensor:
        """(A, D): for each prompt, mean positive embedding - mean negative embedding (each re-normalised).

        A stored embedding e (unit, D) then scores ``logit_scale * e @ direction``.
        """
        texts, spans = [], []
        for prompt in prompts.values():
            for which in ("positive", "negative"):
                group = prompt.texts(which)
                spans.append((len(texts), len(texts) + len(group)))
                texts.extend(group)
        emb = self.embed_texts(texts)
        means = torch.stack([F.normalize(emb[a:b].mean(0), dim=-1) for a, b in spans])
        return means[0::2] - means[1::2]

    def _add(self, prompts: Mapping[str, Prompt]) -> None:
        prompts = {check_attribute_name(a): p for a, p in prompts.items()}
        for name, prompt in prompts.items():
            _check_phrases(name, prompt)
        new = self.text_directions(prompts).to(self.directions)
        self.directions = torch.cat([self.directions, new])
        self.prompts.update(prompts)

    def with_attributes(self, prompts: Mapping[str, Prompt | str] | Sequence[str]) -> CLIPClassifier:
        """A classifier sharing this one's model with ``prompts`` added after its own attributes.

        ``prompts`` is {name: Prompt} (or the JSON form of :func:`load_prompts`) or a list of
        ``"Name=positive|negative"`` strings. Nothing changes here; a clash of names, an empty or
        too long phrase raises TlganError before anything is built.
        """
        parsed = as_prompts(prompts)
        clash = [a for a in parsed if a in self.prompts]
        if clash:
            raise TlganError(
                f"attribute(s) {', '.join(clash)} already exist in this classifier; choose other names"
            )
        return CLIPClassifier(
            self.model,
            self.tokenizer,
            {**self.prompts, **parsed},
            image_size=self.image_size,
            crop_size=self.crop_size,
            mean=self.mean.flatten().tolist(),
            std=self.std.flatten().tolist(),
            name=self.name,
            source=self.source,
        ).to(self.mean.device)

    # -- images ------------------------------------------------------------------------------
    def pixel_values(self, images: torch.Tensor) -> torch.Tensor:
        """Images (N, 3, H, W) in [-1, 1] -> the model's input (N, 3, crop, crop); differentiable."""
        images = check_images(images)
        x = (images.to(self.mean.dtype) + 1.0) / 2.0
        x = resize_center_crop(x, self.image_size, self.crop_size).clamp(0.0, 1.0)
        return (x - self.mean) / self.std

    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised image embeddings (N, D), float32 (differentiable in ``images``)."""
        pixels = self.pixel_values(images.to(self.mean.device))
        pooled = self.model.vision_model(pixel_values=pixels).pooler_output
        return F.normalize(self.model.visual_projection(pooled).float(), dim=-1)

    @property
    def logit_scale(self) -> float:
        return float(self.model.logit_scale.detach().exp().clamp(max=100.0))

    def logits_from_embeddings(
        self, embeddings: torch.Tensor, directions: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(N, D) normalised embeddings (any float dtype, e.g. stored float16) -> (N, A) logits.

        ``directions`` (A', D) from :meth:`text_directions` scores other prompts than this
        classifier's own. Raises TlganError when D does not match the model.
        """
        directions = self.directions if directions is None else directions
        if embeddings.ndim != 2 or embeddings.shape[1] != directions.shape[1]:
            raise TlganError(
                f"embeddings of shape {tuple(embeddings.shape)} do not fit this CLIP: it needs (N, "
                f"{directions.shape[1]}); were they stored by another model?"
            )
        return self.logit_scale * (embeddings.to(directions) @ directions.T)

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        return self.logits_from_embeddings(self.embed_images(images))

    def features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """[the normalised image embedding (N, D)]: CLIP's feature loss for inversion."""
        return [self.embed_images(images)]


def load_clip(
    model: str = "", prompts: Mapping | Sequence[str] | None = None, device: str = "cpu"
) -> CLIPClassifier:
    """A :class:`CLIPClassifier` from MODEL (see module docs) and ``prompts``.

    Without ``prompts`` its attributes are those of ``tlgan_prompts.json`` in the model's folder
    (the bundled toyfaces-clip has its 17), else none until :meth:`~CLIPClassifier.with_attributes`.
    """
    transformers = require_transformers()
    path, revision = resolve_model(model)
    clip = from_pretrained(transformers.CLIPModel, path, revision, "CLIP model")
    if not isinstance(clip, transformers.CLIPModel):
        raise TlganError(f"{model}: not a CLIP model ({type(clip).__name__})")
    tokenizer = from_pretrained(transformers.AutoTokenizer, path, revision, "tokenizer")
    pre = preprocessor_config(path, revision)
    size = int(clip.config.vision_config.image_size)
    classifier = CLIPClassifier(
        clip.float().eval().requires_grad_(False),
        tokenizer,
        image_size=_size(pre.get("size"), size),
        crop_size=_size(pre.get("crop_size"), size),
        mean=pre.get("image_mean", OPENAI_MEAN),
        std=pre.get("image_std", OPENAI_STD),
        name=Path(path).name if Path(path).is_dir() else path,
        source=model or BUNDLED,
    ).to(device)
    if prompts is None and Path(path).is_dir() and (Path(path) / PROMPTS_FILE).is_file():
        prompts = load_prompts(Path(path) / PROMPTS_FILE)
    return classifier.with_attributes(prompts) if prompts else classifier
