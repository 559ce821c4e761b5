"""Rows added from words: the studio's "add an attribute" field, for a studio served on a CLIP run.

``tlgan serve --run RUN`` (:func:`app_from_run`) serves the run's generator, its classifier (CLIP
with the run's prompts) and axes fitted on the run. When the run stores CLIP image embeddings,
``POST /api/words`` (a route of every studio, :func:`add_words_routes`) takes a positive and an optional negative phrase, scores the run's stored
embeddings with them (one text forward, one (N, E) x (E,) product: no image is generated), fits
the attribute's axis with the studio's finder and adds it as a row, with a probability (the
classifier gains the attribute) and a lock, like any other. ``GET /api/words`` says whether the
field is available. The row lives in the server's memory; the run folder is not changed
(``tlgan fit RUN --attribute`` adds attributes to the run itself).
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import torch
from fastapi import FastAPI
from pydantic import BaseModel, Field

from tlgan.errors import TlganError
from tlgan.studio.schema import ERRORS

#: Words left out when a row is named after its phrase ("a photo of a person wearing a hat" -> Hat).
FILLER = frozenset(
    "a an the of photo picture image person face someone with wearing who is has having".split()
)


class WordsRequest(BaseModel):
    positive: str = Field(description="What the attribute looks like, e.g. 'a person wearing a hat'.")
    negative: str = Field("", description="Its opposite (optional; default: a neutral phrase).")
    name: str = Field("", description="Row name (optional; default: made from the positive phrase).")


class WordsResponse(BaseModel):
    name: str = Field(description="The new row's name, as used in `amounts` and `locks`.")
    positive: str
    negative: str
    metrics: dict[str, Any] = Field(default_factory=dict, description="Quality figures of the fitted axis.")
    seconds: float = Field(description="Seconds from the request's arrival to the row being usable.")


class WordsStatus(BaseModel):
    enabled: bool = Field(description="Whether rows can be added from words (a CLIP run with embeddings).")
    reason: str = Field("", description="Why not, when not.")
    samples: int = Field(0, description="Stored embeddings the axes are fitted on.")


def row_name(positive: str, taken: list[str]) -> str:
    """A row name from a phrase: its first three telling words, capitalised, joined by '_'; made
    unique against ``taken`` with a number."""
    words = [w for w in re.findall(r"[A-Za-z0-9]+", positive) if w.lower() not in FILLER][:3]
    base = "_".join(w.capitalize() for w in words) or "Words"
    name, k = base, 2
    while name in taken:
        name, k = f"{base}_{k}", k + 1
    return name


class WordRows:
    """Adds rows from words to a studio built on ``run`` (a CLIP run with embeddings).

    The run's latents (N, D) and embeddings (N, E) are read once, here. ``method`` is the finder
    of the new axes (default: the run space's). Raises TlganError for a run without embeddings.
    """

    def __init__(self, studio, run, method: str | None = None):
        from tlgan.axes.finders import default_method
        from tlgan.sampling.text_attributes import require_embeddings

        require_embeddings(run)
        self.studio = studio
        self.run = run
        self.method = method or default_method(run.space)
        self.latents, self.embeddings = [], []
        for shard in run.iter_shards():
            self.latents.append(shard["latents"])
            self.embeddings.append(shard["embeddings"])
        self.latents = torch.cat(self.latents)
        self.embeddings = torch.cat(self.embeddings).float()

    def add(self, positive: str, negative: str = "", name: str = "", started: float | None = None) -> dict:
        """Fit the axis of ``positive`` vs ``negative`` on the stored embeddings and add its row.

        Returns {name, positive, negative, metrics, seconds}. Raises TlganError for an empty or too
        long phrase, a bad name or one the studio already has, or what the finder refuses.
        """
        from tlgan.axes.finders import make_finder, score_options
        from tlgan.models.clip import NEUTRAL_NEGATIVE, Prompt, check_attribute_name
        from tlgan.sampling.text_attributes import merge_axes

        started = time.perf_counter() if started is None else started
        studio = self.studio
        taken = list(studio.row_names) + list(studio.classifier.attributes)
        positive, negative, name = positive.strip(), negative.strip() or NEUTRAL_NEGATIVE, name.strip()
        if not positive:
            raise TlganError("the positive phrase is empty; describe the attribute in a few words")
        name = check_attribute_name(name) if name else row_name(positive, taken)
        if name in taken:
            raise TlganError(f"the studio already has a row named {name!r}; choose another name")
        prompt = {name: Prompt(positive, negative)}
        with studio.locked():
            classifier = studio.classifier
            directions = classifier.text_directions(prompt)  # raises for a too long phrase
        scores = classifier.logits_from_embeddings(self.embeddings, directions)
        finder = make_finder(self.method, **score_options(self.method, self.run.classifier))
        finder.fit(self.latents, scores, [name])
        axis = finder.to_feature_axes(space=self.run.space, generator=studio.axes.generator)
        with studio.locked():
            merged = merge_axes(studio.axes, axis)
            studio.classifier = classifier.with_attributes(prompt)
            studio.faces.axes = merged
        return {
            "name": name,
            "positive": positive,
            "negative": negative,
            "metrics": {k: v for k, v in axis.metrics.get(name, {}).items() if isinstance(v, (int, float))},
            "seconds": round(time.perf_counter() - started, 4),
        }


NOT_FROM_A_RUN = (
    "rows from words need a studio served on a run sampled with a CLIP classifier: "
    "tlgan sample --classifier clip:MODEL --out RUN, then tlgan serve --run RUN"
)


def add_words_routes(app: FastAPI) -> None:
    """``GET /api/words`` (available or why not) and ``POST /api/words`` (add a row from words).

    They serve ``app.state.words`` (a :class:`WordRows`, set by :func:`app_from_run`) and answer
    with ``app.state.words_reason`` while there is none; every studio has the routes, so the page
    can always ask."""
    from starlette.concurrency import run_in_threadpool

    app.state.words = None
    app.state.words_reason = NOT_FROM_A_RUN

    @app.get("/api/words", response_model=WordsStatus, summary="Whether rows can be added from words")
    def words_status() -> WordsStatus:
        rows = app.state.words
        if rows is None:
            return WordsStatus(enabled=False, reason=app.state.words_reason)
        return WordsStatus(enabled=True, samples=int(rows.latents.shape[0]))

    @app.post("/api/words", response_model=WordsResponse, responses=ERRORS, summary="Add a row from words")
    async def add_words(req: WordsRequest) -> WordsResponse:
        """Fit an attribute's axis from a positive (and optional negative) phrase on the run's stored
        CLIP embeddings, and add it as a row; ``seconds`` is the time until the row is usable."""
        started = time.perf_counter()
        rows = app.state.words
        if rows is None:
            raise TlganError(app.state.words_reason)
        return WordsResponse(
            **await run_in_threadpool(rows.add, req.positive, req.negative, req.name, started)
        )


def app_from_run(
    run_dir: str | Path, axes: str | None = None, device: str = "cpu", method: str | None = None, **app_kwargs
) -> FastAPI:
    """The studio of a run folder: its generator (with its options), its classifier (a CLIP with
    every prompt the run has), ``axes`` (a file from ``tlgan fit``; default: fitted on the run now
    with ``method``), and, for a run with CLIP embeddings, the "add an attribute" field.
    ``app_kwargs`` go to :func:`tlgan.studio.app.create_app`."""
    from tlgan.axes import FeatureAxes
    from tlgan.axes.finders import default_method
    from tlgan.models import load_generator
    from tlgan.pipeline import fit_axes
    from tlgan.sampling import Run
    from tlgan.studio.app import create_app

    run = Run.open(run_dir)
    generator = load_generator(run.generator, device, **run.generator_options)
    classifier = run.load_classifier(device)
    method = method or default_method(run.space)
    feature_axes = FeatureAxes.load(axes) if axes else fit_axes(run, method)
    app = create_app(
        generator,
        classifier,
        feature_axes,
        generator_name=run.generator,
        classifier_name=run.classifier,
        **app_kwargs,
    )
    if run.has_embeddings:
        app.state.words = WordRows(app.state.studio, run, method)
    else:
        app.state.words_reason = (
            f"{run.path} holds no CLIP image embeddings; sample a run with --classifier clip:MODEL to add "
            f"attributes in words"
        )
    return app
