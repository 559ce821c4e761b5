"""Training ``toyfaces-clip``: a small CLIP on toyfaces renders and captions composed from their labels.

Each step renders ``batch_size`` fresh faces of ``toyfaces-render`` (sample indices
step * batch_size ..., so no face is seen twice), writes one caption per face
(:func:`tlgan.toyfaces.captions.compose`: a random subset of its attributes, in random order,
with synonyms and templates) and ``negatives`` hard negatives (the same caption with one
attribute made false, :func:`~tlgan.toyfaces.captions.hard_negatives`). The loss is CLIP's
symmetric contrastive loss with the hard negatives among the image side's candidates
(NegCLIP's recipe), plus ``hard_weight`` x a softmax of each face over its own caption and its
hard negatives alone, which teaches the towers what "with" and "without" change faster than
the in-batch softmax does. The model is transformers' ``CLIPModel`` with a small config (ViT
image tower on 64 px with 16 px patches, two-layer text tower), saved with ``save_pretrained``
beside a word-level tokenizer of the captions' vocabulary, so ``clip:OUT`` loads it like any CLIP.

Every random choice of a step (latents, captions) depends only on (seed, step); checkpoints
hold the weights and Adam's state, so a resumed run equals an uninterrupted one bit for bit.
A *new phase* (``new_phase``) resumes a checkpoint with other values of :data:`PHASE_SETTINGS`
(the loss, the captions, the optimiser's rates; never the network's shape or the seed); the
checkpoint then records the new values and the step they apply from, so the continued run
resumes bit for bit in turn.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from tlgan.errors import TlganError
from tlgan.io import write_json
from tlgan.train.checkpoint import has_checkpoint, restore_checkpoint, save_checkpoint
from tlgan.train.common import command_line, cosine_lr, resolve_device, set_lr, settings_mismatch

log = logging.getLogger(__name__)

STREAM_CAPTIONS = 11
MONITOR_SEED = 80_001  # a few hundred faces scored while training; the evaluation uses another seed
PAD, UNK, BOS, EOS = "[PAD]", "[UNK]", "<|startoftext|>", "<|endoftext|>"
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
#: Settings a new phase of a run may change; the others fix the network or the faces of each step.
PHASE_SETTINGS = (
    "lr",
    "weight_decay",
    "negatives",
    "caption_most",
    "caption_keep",
    "caption_focus",
    "focus_negatives",
    "hard_weight",
)
#: Settings added after the first runs -> the value those runs used (they resume with it).
INTRODUCED = {
    "negatives": 1,
    "caption_most": 7,
    "caption_keep": [0.1, 0.6],
    "hard_weight": 0.0,
    "caption_focus": {},
    "focus_negatives": False,
}


def build_tokenizer(words: list[str], max_length: int = 77):
    """A word-level ``PreTrainedTokenizerFast``: lower-cased, split on spaces and punctuation.

    Ids: [PAD]=0, [UNK]=1, then ``words``, then the start and end tokens (the end token has the
    highest id, as in OpenAI's CLIP vocabulary). Every text is wrapped as ``<start> ... <end>``.
    """
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    vocab = {PAD: 0, UNK: 1}
    for word in words:
        vocab.setdefault(word, len(vocab))
    vocab[BOS] = len(vocab)
    vocab[EOS] = len(vocab)
    tok = Tokenizer(WordLevel(vocab, unk_token=UNK))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A {EOS}", special_tokens=[(BOS, vocab[BOS]), (EOS, vocab[EOS])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        model_max_length=max_length,
    )


def small_clip_config(
    tokenizer,
    *,
    image_size: int = 64,
    patch_size: int = 16,
    width: int = 128,
    text_width: int = 128,
    projection_dim: int = 128,
):
    """A ``CLIPConfig`` for a small CLIP whose text tower matches ``tokenizer`` (vocabulary, ids)."""
    from transformers import CLIPConfig

    text = {
        "vocab_size": len(tokenizer),
        "hidden_size": text_width,
        "intermediate_size": 2 * text_width,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "max_position_embeddings": tokenizer.model_max_length,
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }
    vision = {
        "image_size": image_size,
        "patch_size": patch_size,
        "hidden_size": width,
        "intermediate_size": 4 * width,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
    }
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=projection_dim)


def pixel_values(images: torch.Tensor, mean=OPENAI_MEAN, std=OPENAI_STD) -> torch.Tensor:
    """Images in [-1, 1] (N, 3, R, R) -> CLIP's normalised pixels (same size)."""
    m = torch.tensor(mean, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    return ((images + 1.0) / 2.0 - m) / s


def _embed(model, tokenizer, images=None, texts=None, chunks: int = 4):
    """Normalised image and/or text embeddings; texts run in ``chunks`` groups of similar length
    (less padding to compute), their rows returned in the order given."""
    out = []
    if images is not None:
        pooled = model.vision_model(pixel_values=pixel_values(images)).pooler_output
        out.append(F.normalize(model.visual_projection(pooled), dim=-1))
    if texts is not None:
        ids = tokenizer(list(texts), truncation=True)["input_ids"]
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        parts = []
        for group in np.array_split(np.asarray(order), min(chunks, len(order))):
            enc = tokenizer.pad({"input_ids": [ids[i] for i in group]}, return_tensors="pt")
            pooled = model.text_model(
                input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]
            ).pooler_output
            parts.append(model.text_projection(pooled))
        inverse = torch.empty(len(order), dtype=torch.long)
        inverse[torch.as_tensor(order)] = torch.arange(len(order))
        out.append(F.normalize(torch.cat(parts)[inverse], dim=-1))
    return out


@torch.no_grad()
def monitor_accuracy(model, tokenizer, images: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Zero-shot balanced accuracy per attribute from :data:`~tlgan.toyfaces.captions.PROMPTS`."""
    from tlgan.toyfaces.bundled_eval import balanced_accuracy
    from tlgan.toyfaces.captions import PROMPTS
    from tlgan.toyfaces.world import ATTRIBUTES

    was = model.training
    model.eval()
    img = torch.cat(
        [_embed(model, tokenizer, images=images[i : i + 256])[0] for i in range(0, len(images), 256)]
    )
    (txt,) = _embed(model, tokenizer, texts=[p for a in ATTRIBUTES for p in PROMPTS[a]])
    model.train(was)
    scores = img @ (txt[0::2] - txt[1::2]).T
    acc = balanced_accuracy(scores > 0, labels)
    return {a: float(v) for a, v in zip(ATTRIBUTES, acc, strict=True)}


def _step_data(
    renderer,
    seed: int,
    step: int,
    batch_size: int,
    negatives: int = 1,
    most: int = 7,
    keep=(0.1, 0.6),
    focus: dict[str, float] | None = None,
    focus_negatives: bool = False,
):
    """Step ``step``'s faces (B, 3, 64, 64), their captions (B) and hard negatives (B * negatives,
    grouped by kind: all first negatives, then all second ones...); depends only on (seed, step)
    and the caption settings."""
    from tlgan.toyfaces import world
    from tlgan.toyfaces.captions import compose, hard_negatives

    z = renderer.sample_latents(batch_size, seed=seed, start=step * batch_size)
    with torch.no_grad():
        images = renderer.synthesize(z)
    labels = world.labels(z).numpy()
    rng = np.random.default_rng(np.random.SeedSequence([int(seed) % (2**63), STREAM_CAPTIONS, int(step)]))
    captions, wrong = [], []
    for row in labels:
        caption, stated = compose(row, rng, most=most, keep_range=tuple(keep), focus=focus)
        captions.append(caption)
        wrong.append(
            hard_negatives(row, stated, rng, negatives, tuple(focus or ()) if focus_negatives else ())
        )
    return images, captions, [w[k] for k in range(negatives) for w in wrong]


def _check_focus(caption_focus: dict[str, float] | None) -> dict[str, float]:
    """``caption_focus`` validated and put in :data:`ATTRIBUTES` order (the order of its draws)."""
    from tlgan.toyfaces.world import ATTRIBUTES

    focus = dict(caption_focus or {})
    unknown = sorted(set(focus) - set(ATTRIBUTES))
    if unknown:
        raise TlganError(
            f"caption_focus names {unknown}, which are not toyfaces attributes; use some of {list(ATTRIBUTES)}"
        )
    bad = {a: p for a, p in focus.items() if not 0.0 <= float(p) <= 1.0}
    if bad:
        raise TlganError(f"caption_focus probabilities must lie in [0, 1]; got {bad}")
    return {a: float(focus[a]) for a in ATTRIBUTES if a in focus}


def _phase_change(out_dir: Path, saved: dict, settings: dict, new_phase: bool) -> dict[str, Any]:
    """The settings a resume changes ({name: new value}); raises TlganError unless ``new_phase``
    allows every change (only :data:`PHASE_SETTINGS` may change)."""
    diff = settings_mismatch(saved, settings, INTRODUCED)
    if not diff:
        return {}
    saved = {**INTRODUCED, **saved}
    changed = {k: settings[k] for k in settings if saved.get(k) != settings[k]}
    fixed = [d for d in diff if d.split(":")[0] not in PHASE_SETTINGS]
    if fixed:
        raise TlganError(
            f"{out_dir}: cannot resume with another network or seed ({'; '.join(fixed)}); pass the same ones"
        )
    if not new_phase:
        raise TlganError(
            f"{out_dir}: cannot resume with other settings ({'; '.join(diff)}); pass the same ones, "
            "or --new-phase to continue the run with these (recorded in training.json)"
        )
    return changed


def train_clip(
    out_dir: str | os.PathLike,
    *,
    steps: int,
    batch_size: int = 96,
    lr: float = 1.5e-3,
    weight_decay: float = 0.1,
    width: int = 128,
    text_width: int = 128,
    patch_size: int = 16,
    negatives: int = 1,
    caption_most: int = 7,
    caption_keep: tuple[float, float] = (0.1, 0.6),
    hard_weight: float = 0.0,
    caption_focus: dict[str, float] | None = None,
    focus_negatives: bool = False,
    device: str = "cpu",
    seed: int = 0,
    resume: bool = False,
    new_phase: bool = False,
    checkpoint_every: int = 200,
    monitor_every: int = 200,
    name: str = "toyfaces-clip",
    progress: bool = True,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
    command: str | None = None,
) -> dict[str, Any]:
    """Train a small CLIP on toyfaces renders; save it to ``out_dir`` in transformers' format.

    Writes ``OUT/config.json`` + ``OUT/model.safetensors`` (``CLIPModel.save_pretrained``), the
    tokenizer files, ``OUT/preprocessor_config.json`` (mean, std, size), ``OUT/tlgan_prompts.json``
    (the 17 attributes' prompt pairs, the default attributes of ``clip:OUT``), ``OUT/training.json``
    (settings, command, timing, monitor accuracies) and ``OUT/checkpoint/`` (every
    ``checkpoint_every`` steps and at the end). ``resume`` continues from the checkpoint; with
    the same settings the result equals an uninterrupted run. ``new_phase`` continues it with
    other :data:`PHASE_SETTINGS` (e.g. ``hard_weight``, ``caption_focus``: {attribute:
    probability that a caption states it}, ``focus_negatives``: hard negatives flip those
    attributes first), recorded with the step they apply from in the
    checkpoint and ``training.json`` (``phase_changes``). Every ``monitor_every`` steps the
    zero-shot balanced accuracy on 512 held-out renders is logged.

    Returns {"out_dir", "steps", "final_loss", "seconds_per_step", "monitor": {step: {attr: acc}},
    "phase_changes": [{"from_step", "settings"}]}.
    Raises TlganError for bad settings, a checkpoint without ``resume``, a settings change
    without ``new_phase`` (or of the network's shape or seed), ``new_phase`` without a
    checkpoint, or a NaN loss.
    """
    try:
        import transformers  # noqa: F401
    except ImportError:
        raise TlganError("training CLIP needs transformers: pip install 'tlgan[clip]'") from None
    from transformers import CLIPModel

    from tlgan.models import load_generator
    from tlgan.toyfaces import world
    from tlgan.toyfaces.captions import vocabulary

    dev = resolve_device(device)
    out_dir = Path(out_dir)
    if steps < 1 or batch_size < 2 or checkpoint_every < 1:
        raise TlganError("steps and checkpoint_every must be at least 1, batch_size at least 2")
    focus = _check_focus(caption_focus)
    if new_phase and not has_checkpoint(out_dir):
        raise TlganError(f"{out_dir}: no checkpoint to continue with --new-phase; train it first")
    resume = resume or new_phase
    if not resume and has_checkpoint(out_dir):
        raise TlganError(
            f"{out_dir} already holds a training checkpoint; pass --resume to continue it, or choose another --out"
        )
    tokenizer = build_tokenizer(vocabulary())
    config = small_clip_config(tokenizer, patch_size=patch_size, width=width, text_width=text_width)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIPModel(config)
    model.to(dev).train()
    renderer = load_generator("toyfaces-render", str(dev))
    decay = [p for n, p in model.named_parameters() if p.ndim > 1 and "embedding" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim > 1 and "embedding" not in n)]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=lr,
        betas=(0.9, 0.98),
    )
    warmup = min(200, steps // 10)
    settings = {
        "batch_size": batch_size,
        "lr": lr,
        "weight_decay": weight_decay,
        "width": width,
        "text_width": text_width,
        "patch_size": patch_size,
        "negatives": negatives,
        "caption_most": caption_most,
        "caption_keep": list(caption_keep),
        "hard_weight": hard_weight,
        "caption_focus": focus,
        "focus_negatives": bool(focus_negatives),
        "seed": seed,
    }
    start, loss_avg, monitor, seconds_before, phases = 0, None, {}, 0.0, []
    if resume and has_checkpoint(out_dir):
        manifest = restore_checkpoint(out_dir, modules={"model": model}, optimizers={"model": optimizer})
        info = manifest["info"]
        changed = _phase_change(out_dir, info.get("settings", {}), settings, new_phase)
        start, loss_avg = int(manifest["step"]), info.get("loss_avg")
        monitor, seconds_before = info.get("monitor", {}), float(info.get("seconds", 0.0))
        phases = list(info.get("phase_changes", []))
        if changed:
            phases.append({"from_step": start, "settings": changed})
            log.info("new phase from step %d: %s", start, changed)
        optimizer.param_groups[0]["weight_decay"] = weight_decay  # the checkpoint's may be another
        log.info("resumed from step %d", start)

    if monitor_every:
        z_mon = renderer.sample_latents(512, seed=MONITOR_SEED)
        with torch.no_grad():
            mon_images = renderer.synthesize(z_mon)
        mon_labels = world.labels(z_mon)
    seconds, ran = 0.0, 0

    def checkpoint(step):
        save_checkpoint(
            out_dir,
            step=step,
            modules={"model": model},
            optimizers={"model": optimizer},
            info={
                "settings": settings,
                "steps": steps,
                "loss_avg": loss_avg,
                "monitor": monitor,
                "seconds": seconds_before + seconds,
                "phase_changes": phases,
                "kind": "clip",
            },
        )

    bar = tqdm(total=steps, initial=start, desc="clip", unit="step", disable=None if progress else True)
    targets = torch.arange(batch_size, device=dev)
    for step in range(start, steps):
        t0 = time.perf_counter()
        set_lr(optimizer, cosine_lr(step, steps, lr, warmup))
        images, captions, wrong = _step_data(
            renderer, seed, step, batch_size, negatives, caption_most, caption_keep, focus, focus_negatives
        )
        img, txt = _embed(model, tokenizer, images=images, texts=captions + wrong)
        scale = model.logit_scale.exp().clamp(max=100.0)
        per_image = scale * img @ txt.T  # (B, B + B*negatives): against every caption and hard negative
        per_text = scale * txt[:batch_size] @ img.T
        loss = 0.5 * (F.cross_entropy(per_image, targets) + F.cross_entropy(per_text, targets))
        if hard_weight:
            # each face against its own caption and its hard negatives only: one attribute's
            # words decide each of these, a dense signal the in-batch softmax dilutes
            own = torch.stack([txt[k * batch_size : (k + 1) * batch_size] for k in range(negatives + 1)], 1)
            per_pair = scale * torch.einsum("bd,bkd->bk", img, own)
            loss = loss + hard_weight * F.cross_entropy(per_pair, torch.zeros_like(targets))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        value = float(loss.detach())
        if value != value:
            raise TlganError(f"the loss became NaN at step {step + 1}; lower --lr (now {lr})")
        loss_avg = value if loss_avg is None else 0.98 * loss_avg + 0.02 * value
        seconds += time.perf_counter() - t0
        ran += 1
        bar.update(1)
        bar.set_postfix(loss=f"{loss_avg:.3f}")
        done = step + 1
        if monitor_every and (done % monitor_every == 0 or done == steps):
            acc = monitor_accuracy(model, tokenizer, mon_images, mon_labels)
            monitor[str(done)] = {a: round(v, 4) for a, v in acc.items()}
            log.info(
                "step %d loss %.4f zero-shot balanced accuracy mean %.4f min %.4f (%s)",
                done,
                loss_avg,
                sum(acc.values()) / len(acc),
                min(acc.values()),
                min(acc, key=acc.get),
            )
        if done % checkpoint_every == 0 and done < steps:
            checkpoint(done)
        if on_step is not None:
            on_step(done, {"loss": value})
    bar.close()
    checkpoint(steps)

    model.cpu().eval()
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    from tlgan.models.clip import PROMPTS_FILE
    from tlgan.toyfaces.captions import PROMPTS

    # `clip:OUT` then has the 17 toyfaces attributes without being told them.
    write_json(out_dir / PROMPTS_FILE, {a: {"positive": p, "negative": q} for a, (p, q) in PROMPTS.items()})
    write_json(
        out_dir / "preprocessor_config.json",
        {
            "crop_size": {
                "height": config.vision_config.image_size,
                "width": config.vision_config.image_size,
            },
            "size": {"shortest_edge": config.vision_config.image_size},
            "image_mean": list(OPENAI_MEAN),
            "image_std": list(OPENAI_STD),
            "resample": 3,
        },
    )
    result = {
        "out_dir": str(out_dir),
        "steps": steps,
        "final_loss": loss_avg,
        "seconds_per_step": seconds / ran if ran else None,
        "training_seconds": round(seconds_before + seconds, 1),
        "monitor": monitor,
        "phase_changes": phases,
    }
    write_json(
        out_dir / "training.json",
        {
            **result,
            "settings": settings,
            "device": str(dev),
            "threads": torch.get_num_threads(),
            "command": command if command is not None else command_line(),
        },
    )
    return result
