"""The learned-edit report: ``index.html`` (tables + edit grids) and ``delta-eval.json``."""

from __future__ import annotations

import base64
import html
import os
from pathlib import Path
from typing import Any

from tlgan.io import atomic_path, write_json

METHODS = (
    ("learned", "learned edit E/D"),
    ("learned_read", "learned, start's step read from its latent"),
    ("learned_steps", "learned, code per number of steps (start not told)"),
    ("learned_alpha", "learned, alpha x one-step code (tlgan delta edit)"),
    ("learned_held", "learned, other attributes held"),
    ("learned_steps_held", "learned, code per number of steps, other attributes held"),
    ("learned_chosen", "learned, held or not as the training faces chose"),
    ("linear", "linear (LS line)"),
    ("linear_held", "linear, other attributes held"),
    ("axis", "classifier axis"),
    ("no_edit", "no edit"),
    ("inversion", "inverted target (ceiling)"),
    ("exact", "exact edit of the start (the world's own change)"),
    ("exact_mean", "mean exact change of the training faces"),
    ("true_change", "true target (renderer)"),
)


def _fmt(value, digits: int = 2, signed: bool = False) -> str:
    if value is None:
        return "–"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _factor_section(factor: str, entry: dict[str, Any], out_dir: Path) -> str:
    best = entry["best"]
    rows = []
    for key, label in METHODS:
        if key not in best:
            continue
        m = best[key]
        spread = m.get("spread", {})
        psnr = _fmt(m.get("psnr_db")) + (f" ± {_fmt(spread['psnr_db'])}" if "psnr_db" in spread else "")
        rows.append(
            [
                html.escape(label),
                psnr,
                _fmt(m.get("off_target_classifier"), 4),
                _fmt(m.get("off_target_identity"), 4),
                _fmt(m.get("factor_error"), 3),
            ]
        )
    ceiling = best.get("headroom_db")
    note = ""
    if ceiling is not None:
        note = (
            f" Headroom (inverted target minus linear): <b>{_fmt(ceiling, 2, True)} dB</b>, the most any edit of "
            f"these latents could gain over the line."
        )
        if best.get("target_above_ceiling"):
            note += (
                f" A gain of +{best['target_gain_db']:g} dB is above that ceiling here: no edit of these "
                f"latents can reach it."
            )
    wander = ""
    if "train_wander" in entry:
        w = entry["train_wander"]
        wander = (
            f" Training sequences: {_fmt(w['step_norm'])} latent distance between steps, "
            f"{_fmt(w['shared_step_norm'])} along the path they share, {_fmt(w['wander'])} of each "
            f"sequence's own wander (root mean square)."
        )
    seeds = ""
    if best.get("gain_db_by_seed") and len(best["gain_db_by_seed"]) > 1:
        seeds = (
            f" Mean over {len(best['gain_db_by_seed'])} training seeds (± their standard deviation; gains "
            f"{', '.join(_fmt(g, 2, True) for g in best['gain_db_by_seed'])} dB)."
        )
    held = ""
    if best.get("held_gain_db") is not None:
        used = best.get("held_headroom_used")
        held = f" With the other attributes held: <b>{_fmt(best['held_gain_db'], 2, True)} dB</b>" + (
            f" ({used:.0%} of the headroom)." if used is not None else "."
        )
        choice = best.get("hold_choice") or {}
        if choice.get("loo_psnr_db") is not None:
            held += (
                f" The training faces, each left out in turn, score {_fmt(choice['loo_psnr_held_db'])} dB held "
                f"against {_fmt(choice['loo_psnr_db'])} dB not, so the chosen edit is "
                f"{'held' if choice['hold'] else 'not held'}."
            )
    parts = [
        f"<h2>{html.escape(factor)}</h2>",
        f"<p>Values per step: {', '.join(f'{v:g}' for v in entry['values'])}. Learned minus linear: "
        f"<b>{_fmt(best['gain_db'], 2, True)} dB</b> with the most training identities.{seeds}{held}{note}"
        f"{wander}</p>",
        _table(
            [
                "method",
                "PSNR vs true target (dB)",
                "off-target: classifier |Δp|",
                "off-target: identity factors",
                "error in the edited factor",
            ],
            rows,
        ),
    ]
    curve = [
        [
            k,
            _fmt(v["learned"]["psnr_db"]),
            _fmt(v["linear"]["psnr_db"]),
            _fmt(v["gain_db"], 2, True),
            _fmt(v.get("headroom_db"), 2, True),
        ]
        for k, v in entry["by_identities"].items()
    ]
    parts += [
        "<h3>Learning curve</h3>",
        _table(["training identities", "learned (dB)", "linear (dB)", "gain (dB)", "headroom (dB)"], curve),
    ]
    grid = entry.get("grid")
    held_row = ", then the learned edits with the other attributes held" if "learned_held" in best else ""
    if grid and (out_dir / grid).is_file():
        data = base64.b64encode((out_dir / grid).read_bytes()).decode()
        parts.append(
            f"<h3>Edits from the middle step</h3><p>Per held-out identity, rows over the steps: the "
            f"renderer's true targets, the learned edits and the straight line's, each edited from that "
            f"face's inverted middle step{held_row}.</p><img alt='edit grid {html.escape(factor)}' "
            f"src='data:image/png;base64,{data}'>"
        )
    return "".join(parts)


def write_delta_report(result: dict[str, Any], out_dir: str | os.PathLike) -> Path:
    """Write ``out_dir/delta-eval.json`` and ``out_dir/index.html`` from :func:`~tlgan.delta.evaluate.evaluate_delta`'s result."""
    out = Path(out_dir)
    write_json(out / "delta-eval.json", result)
    intro = (
        f"<p>Generator {html.escape(str(result['generator']))}; {result['test_identities']} held-out identities, "
        f"{result['steps']} steps per sequence, every ordered pair of steps as a requested change; training "
        f"identities {', '.join(str(k) for k in result['train_identities'])}. Each edit is compared with the "
        f"renderer's true image of the same identity with the requested change.</p>"
    )
    if result.get("warp"):
        intro += (
            f"<p><b>Synthetic check:</b> the generator sees its latent through the known curved warp "
            f"{html.escape(str(result['warp']))}, so the factors' paths bend; these figures describe that "
            f"warped toy, not the generator itself.</p>"
        )
    sections = "".join(_factor_section(f, e, out) for f, e in result["factors"].items())
    style = (
        "body{font-family:sans-serif;max-width:60em;margin:2em auto;padding:0 1em}table{border-collapse:collapse;"
        "margin:.5em 0}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}"
        "td:first-child,th:first-child{text-align:left}img{image-rendering:pixelated;max-width:100%}"
    )
    page = (
        f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'><title>tlgan learned edits</title>"
        f"<style>{style}</style></head><body><h1>Learned edits against the truth</h1>{intro}{sections}"
        f"</body></html>\n"
    )
    path = out / "index.html"
    with atomic_path(path) as tmp:
        tmp.write_text(page)
    return path


def edit_grid(
    generator,
    model,
    train_latents,
    values,
    test_latents,
    test_images,
    path,
    identities: int = 3,
    classifier=None,
    hold=None,
) -> Path:
    """PNG grid: per held-out identity three rows over the steps, all edited from the middle step:
    the true renders, the learned edits, the linear edits; with ``hold`` (axes, attributes) and
    ``classifier`` a fourth, the learned edits with those attributes held."""
    import torch

    from tlgan.delta.evaluate import _code_latents
    from tlgan.delta.train import fit_codes, linear_direction
    from tlgan.imaging import save_grid

    n = test_latents.shape[1]
    d = test_latents.shape[-1]
    mid = n // 2
    vals = torch.as_tensor(values, dtype=torch.float32)
    direction = linear_direction([train_latents], [torch.as_tensor(values, dtype=torch.float64)])
    train_latents = _code_latents(model, train_latents, values)
    k = len(train_latents)
    starts = train_latents[:, mid][None].expand(n, k, d)  # (n changes, K examples, D)
    ends = train_latents.transpose(0, 1)
    with torch.no_grad():
        init = model.encode(starts.reshape(-1, d), ends.reshape(-1, d)).reshape(n, k, -1).mean(1)
    codes = fit_codes(model, starts, ends, init)  # the codes the benchmark measures
    rows = []
    with torch.no_grad():
        for t in range(min(identities, len(test_latents))):
            start = test_latents[t, mid][None].expand(n, d)
            learned = generator.synthesize(model.move(start, codes)).float().cpu()
            linear = generator.synthesize(start + (vals - vals[mid])[:, None] * direction[None]).float().cpu()
            rows += [test_images[t], learned, linear]
            if hold is not None:
                from tlgan.editing.hold import hold_attributes

                held = hold_attributes(generator, classifier, start, model.move(start, codes), *hold)
                rows.append(generator.synthesize(held).float().cpu())
    return save_grid(torch.cat(rows), path, nrow=n, upscale=2, padding=1)


__all__ = ["write_delta_report", "edit_grid"]
