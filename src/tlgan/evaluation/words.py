"""The report's section on attributes in words: what each CLIP prompt is, and how the run reads it.

:func:`measure_text_attributes` is pure measuring over the run's manifest, its added attributes
and its scores; the page shows it with ``templates/text_attributes.html.j2``.
"""

from __future__ import annotations

from typing import Any

import torch


def measure_text_attributes(run, scores: torch.Tensor, axes) -> dict[str, Any] | None:
    """{"model", "embeddings", "attributes": [{name, positive, negative, templates, added,
    positive_share, axis_accuracy}]} for a run scored by CLIP, else None.

    ``scores`` (N, A) are the run's logits in ``run.attributes`` order; ``positive_share`` is the
    fraction of samples with logit > 0 (a phrase pair that puts nearly every face on one side
    reads nothing); ``axis_accuracy`` is the axes' own validation accuracy when they have one.
    """
    prompts = run.prompts()
    if not prompts:
        return None
    added = run.text_attributes()
    added_names = set(added.names) if added else set()
    rows = []
    for k, name in enumerate(run.attributes):
        if name not in prompts:
            continue
        prompt = prompts[name]
        metrics = axes.metrics.get(name, {}) if name in axes.attributes else {}
        rows.append(
            {
                "name": name,
                "positive": prompt.get("positive", ""),
                "negative": prompt.get("negative", ""),
                "templates": list(prompt.get("templates") or []),
                "added": name in added_names,
                "positive_share": round(float((scores[:, k] > 0).float().mean()), 4),
                "axis_accuracy": metrics.get("val_accuracy"),
            }
        )
    return {
        "model": run.classifier,
        "embeddings": run.manifest.get("embeddings"),
        "attributes": rows,
    }
