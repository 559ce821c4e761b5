"""`tlgan toyfaces eval-clip`: how well a CLIP reads the toyfaces world from words alone.

- Zero-shot: on ``n`` fresh renders (a seed no training uses), each attribute's logit from
  its prompt pair (:data:`~tlgan.toyfaces.captions.PROMPTS`) is thresholded at 0 and scored by
  balanced accuracy against the world's labels, beside the bundled CNN classifier's on the same
  faces, and again with prompts worded unlike any caption (:data:`UNSEEN_PROMPTS`).
- Axes: ``n_axes`` samples of ``toyfaces-render`` are embedded once (float16, as a run stores
  them); each attribute's CLIP logits, computed from the stored embeddings, are regressed on
  z (the glm finder with the options a ``clip:`` run's fit uses: CLIP's two-phrase probability as
  the target, :func:`~tlgan.axes.finders.score_options`) and the axis compared with the true one
  by cosine; the CNN's axes beside (its clipped logits, as a CNN run's fit); for reference also the
  glm of the raw CLIP logit (``logit_cosine_to_truth``).
- Phrase to axis: the seconds from a new phrase to its fitted axis on the stored embeddings
  (a text forward, one matrix product, one least-squares fit), against the seconds it took to
  embed the images in the first place.
"""

from __future__ import annotations

import time

import torch
from tqdm.auto import tqdm

from tlgan.axes.finders import make_finder, score_options
from tlgan.errors import TlganError
from tlgan.evaluation.metrics import cosine_to_truth
from tlgan.models import load_classifier, load_generator
from tlgan.models.clip import Prompt, load_clip
from tlgan.toyfaces.bundled_eval import EVAL_SEED, balanced_accuracy
from tlgan.toyfaces.captions import PROMPTS, UNSEEN_PROMPTS

AXES_SEED = 90_003


def _round(values: dict, digits: int = 4) -> dict:
    return {k: round(float(v), digits) for k, v in values.items()}


def _summary(per_attribute: dict) -> dict:
    values = list(per_attribute.values())
    return {
        "mean": round(sum(values) / len(values), 4),
        "min": round(min(values), 4),
        "min_attribute": min(per_attribute, key=per_attribute.get),
    }


@torch.inference_mode()
def _pass(
    renderer, z: torch.Tensor, fns: list, batch_size: int, desc: str, progress: bool
) -> list[torch.Tensor]:
    """Render ``z`` in batches and apply each of ``fns`` to every batch; returns the concatenations."""
    outs: list[list[torch.Tensor]] = [[] for _ in fns]
    seconds = [0.0 for _ in fns]
    for start in tqdm(range(0, len(z), batch_size), desc=desc, disable=None if progress else True):
        images = renderer.synthesize(z[start : start + batch_size])
        for k, fn in enumerate(fns):
            t0 = time.perf_counter()
            outs[k].append(fn(images))
            seconds[k] += time.perf_counter() - t0
    return [torch.cat(o) for o in outs], seconds


def _fit_axes(z: torch.Tensor, logits: torch.Tensor, names: list[str], truth, options: dict) -> dict:
    """Cosine to the truth of each attribute's glm axis (finder ``options``); an attribute whose
    logits do not vary (a phrase pair the model cannot tell apart) gets 0.0."""
    out = {}
    for j, name in enumerate(names):
        try:
            finder = make_finder("glm", **options).fit(z, logits[:, j : j + 1], [name])
        except TlganError:
            out[name] = 0.0
            continue
        out.update(cosine_to_truth(finder.to_feature_axes(space="z", generator="toyfaces-render"), truth))
    return out


def evaluate_clip(
    model: str = "",
    n: int = 2000,
    n_axes: int = 20_000,
    classifier: str = "toyfaces-classifier",
    batch_size: int = 500,
    device: str = "cpu",
    progress: bool = True,
) -> dict:
    """Zero-shot accuracy, axis cosines and phrase-to-axis time of the CLIP ``model`` (``clip:`` MODEL;
    "" = the bundled toyfaces-clip). Returns a JSON-ready dict (see module docs); ``n_axes=0``
    skips the axes."""
    renderer = load_generator("toyfaces-render", device)
    names = list(PROMPTS)
    clip = load_clip(model, prompts={a: Prompt(*PROMPTS[a]) for a in names}, device=device)
    unseen = clip.text_directions({a: Prompt(*UNSEEN_PROMPTS[a]) for a in names})
    cnn = load_classifier(classifier, device)
    cnn_order = [list(cnn.attributes).index(a) for a in names]

    z = renderer.sample_latents(n, seed=EVAL_SEED)
    truth = renderer.labels(z)
    (emb, cnn_logits), _ = _pass(
        renderer, z, [clip.embed_images, cnn.logits], batch_size, "zero-shot", progress
    )
    clip_acc = balanced_accuracy(clip.logits_from_embeddings(emb) > 0, truth)
    unseen_acc = balanced_accuracy(clip.logits_from_embeddings(emb, unseen) > 0, truth)
    cnn_acc = balanced_accuracy(cnn_logits[:, cnn_order] > 0, truth)
    zero_shot = _round(dict(zip(names, clip_acc.tolist(), strict=True)))
    result = {
        "model": model or "toyfaces-clip",
        "n": n,
        "prompts": {a: list(p) for a, p in PROMPTS.items()},
        "zero_shot": {
            "balanced_accuracy": zero_shot,
            **_summary(zero_shot),
            "cnn_classifier": classifier,
            "cnn_balanced_accuracy": _round(dict(zip(names, cnn_acc.tolist(), strict=True))),
            "cnn_mean": round(float(cnn_acc.mean()), 4),
            "unseen_prompts": {a: list(p) for a, p in UNSEEN_PROMPTS.items()},
            "unseen_balanced_accuracy": _round(dict(zip(names, unseen_acc.tolist(), strict=True))),
            "unseen_mean": round(float(unseen_acc.mean()), 4),
        },
    }
    if not n_axes:
        return result

    z = renderer.sample_latents(n_axes, seed=AXES_SEED)
    true_axes = renderer.true_axes(names)
    (stored, cnn_logits), (embed_seconds, _) = _pass(
        renderer, z, [lambda x: clip.embed_images(x).half(), cnn.logits], batch_size, "axes", progress
    )
    options = score_options("glm", "clip:")
    logits = clip.logits_from_embeddings(stored)
    cos = _fit_axes(z, logits, names, true_axes, options)
    cos_unseen = _fit_axes(z, clip.logits_from_embeddings(stored, unseen), names, true_axes, options)
    cos_cnn = _fit_axes(z, cnn_logits[:, cnn_order], names, true_axes, score_options("glm", classifier))
    # The raw logit, unclipped (CLIP logits are bounded by twice the logit scale): the old target.
    cos_logit = _fit_axes(z, logits, names, true_axes, {"clip": None})

    # A phrase never seen before becomes an axis: text forward, product, fit (best of 3).
    timings = []
    for _ in range(3):
        t0 = time.perf_counter()
        direction = clip.text_directions(
            {"Hat": Prompt("a photo of a person wearing a hat", "a photo of a person")}
        )
        phrase_logits = clip.logits_from_embeddings(stored, direction)
        make_finder("glm", **options).fit(z, phrase_logits, ["Hat"])
        timings.append(time.perf_counter() - t0)
    result["axes"] = {
        "n": n_axes,
        "finder": f"glm {options} (CLIP, as a clip: run's fit); the CNN's logits clipped at the default",
        "cosine_to_truth": _round(cos),
        **_summary(cos),
        "unseen_cosine_to_truth": _round(cos_unseen),
        "unseen_mean": _summary(cos_unseen)["mean"],
        "logit_cosine_to_truth": _round(cos_logit),
        "logit_mean": _summary(cos_logit)["mean"],
        "cnn_cosine_to_truth": _round(cos_cnn),
        "cnn_mean": _summary(cos_cnn)["mean"],
    }
    result["phrase_to_axis_seconds"] = round(min(timings), 3)
    result["embed_images_seconds"] = round(embed_seconds, 2)
    result["phrase_to_axis_vs_embedding"] = round(min(timings) / embed_seconds, 4)
    result["threads"] = torch.get_num_threads()
    return result
