"""Captions of toyfaces renders, composed from the world's labels, and the prompt pairs that read them.

A caption names the subject from Male and Young ("a young woman", "an old man", "a person"),
then describes a random subset of the other attributes, each as present or absent ("with a
beard" / "clean-shaven"), in a random order, with synonyms and one of several templates.
Attributes left out say nothing either way, so a caption is true of its image but never
complete; :func:`hard_negatives` writes the same caption with one attribute made false (a
hard negative for contrastive training).

:data:`PROMPTS` are the zero-shot prompt pairs (positive, negative) for the 17 attributes, in
the captions' own words; :data:`UNSEEN_PROMPTS` says the same in words no caption uses.
"""

from __future__ import annotations

import numpy as np

from tlgan.toyfaces.world import ATTRIBUTES

#: Attribute -> (phrases when present, phrases when absent), for attributes other than Male/Young.
CLAUSES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "Smiling": (("smiling", "with a smile"), ("not smiling", "with a neutral expression")),
    "Eyeglasses": (("with glasses", "wearing glasses"), ("without glasses", "with no glasses")),
    "Mustache": (("with a mustache", "with a moustache"), ("without a mustache", "with no mustache")),
    "Beard": (("with a beard", "bearded"), ("without a beard", "clean-shaven")),
    "Bald": (("bald", "with a bald head"), ("with a full head of hair", "not bald")),
    "Bangs": (("with bangs", "with a fringe"), ("without bangs", "with no fringe")),
    "Black_Hair": (
        ("with black hair", "black-haired"),
        ("without black hair", "with hair that is not black"),
    ),
    "Blond_Hair": (("with blond hair", "blond"), ("without blond hair", "with hair that is not blond")),
    "Brown_Hair": (
        ("with brown hair", "brown-haired"),
        ("without brown hair", "with hair that is not brown"),
    ),
    "Gray_Hair": (("with gray hair", "with grey hair"), ("without gray hair", "with hair that is not gray")),
    "Wearing_Lipstick": (("wearing lipstick", "with lipstick"), ("without lipstick", "wearing no lipstick")),
    "Wearing_Hat": (("wearing a hat", "with a hat"), ("without a hat", "bareheaded")),
    "Mouth_Slightly_Open": (
        ("with an open mouth", "with the mouth slightly open"),
        ("with a closed mouth", "with the mouth closed"),
    ),
    "Pale_Skin": (("with pale skin", "pale-skinned"), ("with dark skin", "with tanned skin")),
    "Big_Nose": (("with a big nose", "with a large nose"), ("with a small nose", "with a little nose")),
}

_MALE = (("man", "male person", "guy"), ("woman", "female person", "lady"))
_YOUNG = (("young", "youthful"), ("old", "elderly"))
_NEUTRAL = ("person", "face")
TEMPLATES = (
    "a photo of {s}{c}",
    "{s}{c}",
    "a picture of {s}{c}",
    "a cartoon of {s}{c}",
    "a drawing of {s}{c}",
    "an image of {s}{c}",
)

#: Zero-shot prompt pairs in the captions' words: attribute -> (positive, negative).
PROMPTS: dict[str, tuple[str, str]] = {
    "Male": ("a photo of a man", "a photo of a woman"),
    "Young": ("a photo of a young person", "a photo of an old person"),
    **{
        a: (f"a photo of a person {pos[0]}", f"a photo of a person {neg[0]}")
        for a, (pos, neg) in CLAUSES.items()
    },
}

#: The same pairs worded unlike any caption (words outside the training vocabulary read as unknown).
UNSEEN_PROMPTS: dict[str, tuple[str, str]] = {
    "Male": ("a portrait of a gentleman", "a portrait of a lady"),
    "Young": ("someone in their twenties", "a senior citizen"),
    "Smiling": ("a cheerful grinning face", "a stern face"),
    "Eyeglasses": ("someone in spectacles", "someone with bare eyes"),
    "Mustache": ("a face with a moustache above the lip", "a face with a bare upper lip"),
    "Beard": ("a man with stubble on his chin", "a smooth chin"),
    "Bald": ("a hairless head", "a head full of hair"),
    "Bangs": ("hair cut straight across the forehead", "an uncovered forehead"),
    "Black_Hair": ("dark black hair", "light hair"),
    "Blond_Hair": ("golden yellow hair", "dark hair"),
    "Brown_Hair": ("chestnut brown hair", "hair of another colour"),
    "Gray_Hair": ("silver hair", "hair of another colour"),
    "Wearing_Lipstick": ("red painted lips", "bare lips"),
    "Wearing_Hat": ("a cap on the head", "an uncovered head"),
    "Mouth_Slightly_Open": ("lips parted", "lips pressed together"),
    "Pale_Skin": ("very light skin", "darker skin"),
    "Big_Nose": ("a huge nose", "a tiny nose"),
}


def _article(word: str) -> str:
    return ("an " if word[0] in "aeiou" else "a ") + word


def compose(
    labels: np.ndarray,
    rng: np.random.Generator,
    keep: float | None = None,
    most: int = 7,
    keep_range: tuple[float, float] = (0.1, 0.6),
    focus: dict[str, float] | None = None,
) -> tuple[str, dict[str, bool]]:
    """One caption of a face with boolean ``labels`` (17,) in :data:`ATTRIBUTES` order.

    Each attribute is mentioned with probability ``keep`` (default: drawn from U(*keep_range)
    per caption), at most ``most`` of them. ``focus`` ({attribute: probability}) then adds each
    named attribute not yet mentioned with its probability (beyond ``most``), so attributes a
    model reads poorly are stated more often; without it the random draws are exactly those of
    earlier versions. Returns (caption, {attribute: stated value}) for the attributes it mentions.
    """
    labels = np.asarray(labels, dtype=bool)
    if keep is None:
        keep = float(rng.uniform(*keep_range))
    chosen = [i for i in rng.permutation(len(ATTRIBUTES)) if rng.random() < keep][:most]
    for name, probability in (focus or {}).items():
        if rng.random() < probability and ATTRIBUTES.index(name) not in chosen:
            chosen.append(ATTRIBUTES.index(name))
    mentioned = {a: bool(labels[i]) for i, a in enumerate(ATTRIBUTES) if i in chosen}
    return render_caption(mentioned, rng), mentioned


def render_caption(stated: dict[str, bool], rng: np.random.Generator) -> str:
    """The words for ``stated`` ({attribute: value}) with a random template, synonyms and order."""
    noun = None
    if "Male" in stated:
        options = _MALE[0 if stated["Male"] else 1]
        noun = options[rng.integers(len(options))]
    if "Young" in stated:
        options = _YOUNG[0 if stated["Young"] else 1]
        adjective = options[rng.integers(len(options))]
        noun = f"{adjective} {noun or 'person'}"
    if noun is None:
        noun = _NEUTRAL[rng.integers(len(_NEUTRAL))]
    clauses = []
    for attribute in ATTRIBUTES:
        if attribute in stated and attribute in CLAUSES:
            options = CLAUSES[attribute][0 if stated[attribute] else 1]
            clauses.append(options[rng.integers(len(options))])
    order = rng.permutation(len(clauses))
    clauses = [clauses[i] for i in order]
    if not clauses:
        text = ""
    elif len(clauses) == 1 or rng.random() < 0.5:
        text = " " + ", ".join(clauses)
    else:
        text = " " + ", ".join(clauses[:-1]) + " and " + clauses[-1]
    template = TEMPLATES[rng.integers(len(TEMPLATES))]
    return template.format(s=_article(noun), c=text)


def hard_negatives(
    labels: np.ndarray,
    stated: dict[str, bool],
    rng: np.random.Generator,
    k: int = 1,
    first: tuple[str, ...] = (),
) -> list[str]:
    """``k`` captions like one of ``stated``, each with one attribute made false: a different
    stated attribute flipped in each (those named in ``first`` before the others, when stated),
    or, when fewer are stated, an unstated one added with the value opposite to its label
    (``labels``: the face's (17,) booleans). Hard negatives for contrastive training; ``first``
    takes no random draws of its own."""
    labels = np.asarray(labels, dtype=bool)
    names = [list(stated)[i] for i in rng.permutation(len(stated))]
    flips = ([n for n in names if n in first] + [n for n in names if n not in first])[:k]
    unstated = [a for a in ATTRIBUTES if a not in stated]
    flips += [unstated[i] for i in rng.permutation(len(unstated))[: k - len(flips)]]
    out = []
    for name in flips:
        wrong = dict(stated)
        wrong[name] = not stated[name] if name in stated else not bool(labels[ATTRIBUTES.index(name)])
        out.append(render_caption(wrong, rng))
    return out


def vocabulary() -> list[str]:
    """Every word the captions and :data:`PROMPTS` use, lower case, sorted; punctuation as its own tokens."""
    import re

    texts = list(TEMPLATES) + [w for pair in _MALE + _YOUNG for w in pair] + list(_NEUTRAL)
    texts += [p for pos, neg in CLAUSES.values() for p in pos + neg] + ["a an person , and"]
    texts += [p for pair in PROMPTS.values() for p in pair]
    words = set()
    for text in texts:
        words.update(re.findall(r"\w+|[^\w\s]", text.replace("{s}", " ").replace("{c}", " ").lower()))
    return sorted(words)
