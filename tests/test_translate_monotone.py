"""The monotone term of translation training: the attribute's score rises along the mixed outputs."""

from __future__ import annotations

import json
import math

import pytest
import torch

from test_translate import axes, generator, interrupted_at  # noqa: F401 (fixtures)
from tlgan.errors import TlganError
from tlgan.models import ModuleClassifier
from tlgan.translate import load_translation, train_translation
from tlgan.translate.train import mix_points, monotone_loss

SMALL = dict(width=8, depth=2, batch_size=16, lr=3e-3, checkpoint_every=5, progress=False)


class Bump(torch.nn.Module):
    """A planted classifier of "Up" whose logit peaks part of the way along the edit.

    ``s`` is the image's projection on the generator's "Up" pixel direction, scaled so that
    it is about the latent's first coordinate; the logit is ``3 - 2 (s - 1)^2``. Faces near
    the peak have the attribute (P > 0.5), and the true edit (s + about 1.4) carries most of
    them past it: their score falls, as a translation that draws glasses over glasses does.
    """

    def __init__(self, direction: torch.Tensor):
        super().__init__()
        self.register_buffer("u", direction / direction.norm() / 5.4)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        s = images.flatten(1) @ self.u
        return (3.0 - 2.0 * (s - 1.0) ** 2)[:, None]


@pytest.fixture(scope="module")
def bump(generator):
    return ModuleClassifier(Bump(generator.module.w[:, 0]), ["Up"], input_resolution=16).eval()


@pytest.fixture(scope="module")
def base(generator, axes, tmp_path_factory):
    """A model trained on the pairs alone (no classifier): the starting point of the fine-tunings."""
    out = tmp_path_factory.mktemp("monotone") / "up"
    train_translation(generator, axes, "Up", out, amount=1.5, identity_steps=150, edit_steps=150, **SMALL)
    return out


def _linear_classifier():
    head = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 1, bias=False))
    with torch.no_grad():
        head[1].weight.fill_(1.0 / (3 * 4 * 4))
    return ModuleClassifier(head, ["Up"], input_resolution=4)


def test_the_hinge_is_the_missing_rise_for_a_linear_score():
    # A linear logit with l(I) = 0 and l(E) = L is t L along the mix: both hinges together
    # ask for the rise ``margin`` over the whole edit, so the loss is relu(margin - L) at any t.
    classifier = _linear_classifier()
    start = torch.zeros(4, 3, 4, 4)
    rises = torch.tensor([-1.0, 0.0, 0.3, 2.0])
    end = rises[:, None, None, None].expand(4, 3, 4, 4).clone().requires_grad_(True)
    for t in (torch.full((4,), 0.5), torch.tensor([0.1, 0.4, 0.7, 0.95])):
        loss = monotone_loss(classifier, start, end, 0, 0.5, t)
        assert loss.item() == pytest.approx(float(torch.relu(0.5 - rises).mean()), abs=1e-6)
    # Only the faces short of the margin get a gradient, and it raises their score.
    (grad,) = torch.autograd.grad(monotone_loss(classifier, start, end, 0, 0.5, t), end)
    per_face = grad.flatten(1).sum(1)
    assert (per_face[:3] < 0).all() and per_face[3] == 0


class Wiggle(torch.nn.Module):
    """A planted logit of the mean pixel ``s``: ``10 s + 0.5 sin(8 pi s)``.

    It rises by 10 over s in [0, 1] and always stays above ``l(0) + 0.5 s`` and below
    ``l(1) - 0.5 (1 - s)``, so no single mix between the two ends breaks the one-point hinge
    (margin 0.5); yet it falls for s in about (0.099, 0.151): l(0.10) = 1.2939 > l(0.15) = 1.2061.
    """

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        s = images.flatten(1).mean(1)
        return (10.0 * s + 0.5 * torch.sin(8.0 * torch.pi * s))[:, None]


def test_one_mix_point_is_the_two_hinges_and_more_points_catch_a_fall_between_mixes():
    classifier = ModuleClassifier(Wiggle(), ["Up"], input_resolution=4)
    start, end = torch.zeros(1, 3, 4, 4), torch.ones(1, 3, 4, 4)  # the mix at t has s = t
    # One point: the loss is relu(l(0) - l(t) + m t) + relu(l(t) - l(1) + m (1 - t)), here 0 everywhere.
    for t in torch.linspace(0.01, 0.99, 99):
        assert monotone_loss(classifier, start, end, 0, 0.5, t[None]).item() == 0.0
        assert monotone_loss(classifier, start, end, 0, 0.5, t.view(1, 1)).item() == 0.0
    # Two points on both sides of the fall: the chain's middle hinge is the fall plus its margin.
    loss = monotone_loss(classifier, start, end, 0, 0.5, torch.tensor([[0.10, 0.15]])).item()

    def logit(s: float) -> float:
        return 10.0 * s + 0.5 * math.sin(8.0 * math.pi * s)

    assert loss == pytest.approx(logit(0.10) - logit(0.15) + 0.5 * 0.05, abs=1e-5)
    assert loss > 0.1
    # Points on a rising stretch only add zeros.
    assert monotone_loss(classifier, start, end, 0, 0.5, torch.tensor([[0.3, 0.5, 0.7]])).item() == 0.0


def test_mix_points_cover_each_share_of_the_edit_and_one_point_is_a_plain_draw():
    t = mix_points(1000, 4, torch.Generator().manual_seed(3))
    assert t.shape == (1000, 4)
    assert (t[:, 1:] > t[:, :-1]).all()
    for k in range(4):  # one draw in each quarter, spread over all of it
        assert (t[:, k] > k / 4).all() and (t[:, k] < (k + 1) / 4).all()
        assert t[:, k].min() < k / 4 + 0.01 and t[:, k].max() > (k + 1) / 4 - 0.01
    # One point draws what models trained before the setting drew, so their resumes match.
    one = mix_points(16, 1, torch.Generator().manual_seed(5))
    assert torch.equal(one[:, 0], torch.rand(16, generator=torch.Generator().manual_seed(5)))


def _rise_on_faces_with_the_attribute(model, generator, classifier) -> tuple[float, int]:
    """Mean logit rise l(E(x)) - l(I(x)) over fresh faces with P(I(x)) >= 0.5, and their count."""
    z = generator.sample_latents(256, seed=11)
    with torch.no_grad():
        x = generator.synthesize(z)
        start = classifier.logits(model.identity(x))[:, 0]
        end = classifier.logits(model.edited(x))[:, 0]
    has = start >= 0
    return float((end - start)[has].mean()), int(has.sum())


def test_the_hinge_keeps_faces_that_have_the_attribute_from_losing_it(generator, axes, bump, base):
    kwargs = dict(amount=1.5, classifier=bump, edit_steps=60, feature_weight=0.0, edited_from=base, **SMALL)
    start = load_translation(base)
    plain = train_translation(generator, axes, "Up", base.parent / "plain", monotone_weight=0.0, **kwargs)
    hinged = train_translation(generator, axes, "Up", base.parent / "hinged", monotone_weight=1.0, **kwargs)
    rise_start, faces = _rise_on_faces_with_the_attribute(start, generator, bump)
    rise_plain, _ = _rise_on_faces_with_the_attribute(plain, generator, bump)
    rise_hinged, _ = _rise_on_faces_with_the_attribute(hinged, generator, bump)
    assert faces >= 50
    # The pairs carry these faces past the classifier's peak: the edit learned from them
    # lowers their score, and more steps without the hinge lower it further ...
    assert rise_plain < min(rise_start, -0.25), (rise_start, rise_plain)
    # ... while the same steps with it lift the score instead (it asks for +0.5 per edit).
    assert rise_hinged > 0.25, rise_hinged
    # The hinged network still draws the edit: closer to the pairs' targets than no edit.
    z = generator.sample_latents(256, seed=11)
    with torch.no_grad():
        x = generator.synthesize(z)
        target = generator.synthesize(z + 1.5 * axes["Up"])
        error = (hinged.edited(x) - target).abs().mean()
    assert error < 0.9 * (x - target).abs().mean()
    # Both networks of a fine-tuning start from the earlier model's; the identity is kept.
    for name, tensor in start.identity.state_dict().items():
        assert torch.equal(tensor, hinged.identity.state_dict()[name]), name
    settings = json.loads((base.parent / "hinged" / "translation.json").read_text())["settings"]
    assert settings["monotone_weight"] == 1.0 and settings["monotone_margin"] == 0.5
    assert settings["edited_from"] == str(base) and settings["identity_steps"] == 0


def _faces_past_the_peak(generator, seed: int, n: int = 256) -> torch.Tensor:
    """(n, 3, 16, 16) faces whose "Up" coordinate is 1.2 +- 0.2: just past Bump's peak, where the
    edit lowers the score; the generator's own samples (N(0, 1)) are seldom there."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, 8, generator=g)
    z[:, 0] = 1.2 + 0.2 * torch.randn(n, generator=g)
    with torch.no_grad():
        return generator.synthesize(z)


def test_the_hinge_on_unlabelled_photos_keeps_their_scores_rising(generator, axes, bump, base):
    kwargs = dict(
        amount=1.5, classifier=bump, edit_steps=60, feature_weight=0.0, monotone_weight=1.0, edited_from=base
    )
    photos, fresh = _faces_past_the_peak(generator, 1), _faces_past_the_peak(generator, 2)
    own = train_translation(generator, axes, "Up", base.parent / "own", **kwargs, **SMALL)
    with_photos = train_translation(
        generator, axes, "Up", base.parent / "photos", monotone_images=photos, **kwargs, **SMALL
    )

    def rises(model) -> torch.Tensor:
        with torch.no_grad():
            return bump.logits(model.edited(fresh))[:, 0] - bump.logits(model.identity(fresh))[:, 0]

    # Held on the generator's own images only, the edit still lowers most such faces' score ...
    assert (rises(own) < 0).float().mean() > 0.6, rises(own)
    # ... held on photos of that kind too, it lifts most fresh ones.
    assert (rises(with_photos) < 0).float().mean() < 0.4 and rises(with_photos).mean() > 0
    settings = json.loads((base.parent / "photos" / "translation.json").read_text())["settings"]
    assert settings["monotone_images"]["count"] == 256 and len(settings["monotone_images"]["digest"]) == 16
    assert (
        json.loads((base.parent / "own" / "translation.json").read_text())["settings"]["monotone_images"]
        is None
    )


def _assert_same_edited_weights(a, b) -> None:
    for (k, x), (_, y) in zip(a.edited.state_dict().items(), b.edited.state_dict().items(), strict=True):
        assert torch.equal(x, y), k


def test_photos_as_bytes_train_as_their_floats(generator, axes, bump, base, tmp_path):
    # The CLI holds photos as uint8 (a quarter of the memory); training reads them as read_image would.
    photos = ((_faces_past_the_peak(generator, 1, n=32) + 1) * 127.5).round().to(torch.uint8)
    kwargs = dict(amount=1.5, classifier=bump, edit_steps=4, feature_weight=0.0, monotone_weight=1.0)
    as_bytes = train_translation(
        generator, axes, "Up", tmp_path / "b", edited_from=base, monotone_images=photos, **kwargs, **SMALL
    )
    as_floats = train_translation(
        generator,
        axes,
        "Up",
        tmp_path / "f",
        edited_from=base,
        monotone_images=photos.float() / 127.5 - 1.0,
        **kwargs,
        **SMALL,
    )
    _assert_same_edited_weights(as_bytes, as_floats)


def test_a_fine_tuning_with_the_hinge_resumes_bit_for_bit(generator, axes, bump, base, tmp_path):
    kwargs = dict(
        amount=1.5,
        classifier=bump,
        edit_steps=9,
        feature_weight=0.0,
        monotone_weight=1.0,
        monotone_points=3,
        blend_fraction=0.5,
        edited_from=base,
        **SMALL,
    )
    straight = train_translation(generator, axes, "Up", tmp_path / "straight", **kwargs)
    interrupted_at(7, generator, axes, "Up", tmp_path / "resumed", **kwargs)
    resumed = train_translation(generator, axes, "Up", tmp_path / "resumed", resume=True, **kwargs)
    _assert_same_edited_weights(straight, resumed)
    with pytest.raises(TlganError, match="monotone_weight: checkpoint 1.0, now 0.5"):
        train_translation(
            generator, axes, "Up", tmp_path / "resumed", resume=True, **{**kwargs, "monotone_weight": 0.5}
        )
    with pytest.raises(TlganError, match="monotone_points: checkpoint 3, now 1"):
        train_translation(
            generator, axes, "Up", tmp_path / "resumed", resume=True, **{**kwargs, "monotone_points": 1}
        )


def test_fine_tuning_refuses_another_attribute_or_both_starting_points(generator, axes, base, tmp_path):
    with pytest.raises(TlganError, match="same attribute"):
        train_translation(generator, axes, "Other", tmp_path / "a", edited_from=base, **SMALL)
    with pytest.raises(TlganError, match="not both"):
        train_translation(
            generator, axes, "Up", tmp_path / "b", edited_from=base, identity_from=base, **SMALL
        )
    with pytest.raises(TlganError, match="monotone"):
        train_translation(generator, axes, "Up", tmp_path / "c", monotone_weight=-1.0, **SMALL)
    with pytest.raises(TlganError, match="--monotone-points must be a whole number >= 1"):
        train_translation(generator, axes, "Up", tmp_path / "d", monotone_points=0, **SMALL)
    faces = generator.synthesize(generator.sample_latents(4, seed=1))
    with pytest.raises(TlganError, match=r"must be \(M, 3, 16, 16\).*resize the photos to 16 px"):
        train_translation(generator, axes, "Up", tmp_path / "e", monotone_images=faces[:, :, :8, :8], **SMALL)
    with pytest.raises(TlganError, match=r"floats in \[-1, 1\]"):
        train_translation(generator, axes, "Up", tmp_path / "f", monotone_images=faces * 3, **SMALL)
