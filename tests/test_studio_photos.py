"""Uploaded photos in the studio: FFHQ alignment (``serve --align ffhq``), the edit pasted back into
the photo, and translation rows (``serve --translation DIR``).

The photo is scikit-image's ``astronaut.png`` (a public-domain NASA portrait). The generator is the
analytic toyfaces renderer (64 px) with its true axes; the inversion is replaced by a stand-in
that records what it was given, so the checks are about what the studio feeds it and makes of
its answer, against the CLI's own commands on the same photo.
"""

from __future__ import annotations

import io
import json
import threading

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("httpx")
skimage_data = pytest.importorskip("skimage.data")
from fastapi.testclient import TestClient  # noqa: E402

import tlgan.inversion  # noqa: E402
from test_studio_api import small_classifier  # noqa: E402
from tlgan.errors import TlganError  # noqa: E402
from tlgan.models import load_generator  # noqa: E402
from tlgan.studio.app import create_app, encode_png  # noqa: E402

torch.set_num_threads(1)


def dlib_ready() -> bool:
    try:
        from tlgan.alignment import LandmarkDetector

        LandmarkDetector()
    except TlganError:
        return False
    return True


needs_dlib = pytest.mark.skipif(
    not dlib_ready(), reason="the align extra (dlib + landmark model) is not installed"
)


def pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def from_data_url(url: str) -> np.ndarray:
    import base64

    return pixels(base64.b64decode(url.split(",", 1)[1]))


@pytest.fixture(scope="module")
def astronaut(tmp_path_factory):
    path = tmp_path_factory.mktemp("photos") / "astronaut.png"
    Image.fromarray(skimage_data.astronaut()).save(path)
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    G = load_generator("toyfaces-render")
    axes = G.true_axes()
    axes_path = tmp_path_factory.mktemp("axes") / "true.safetensors"
    axes.save(axes_path)
    return G, small_classifier(axes.attributes), axes, axes_path


def tiny_translation(generator, axes, out, seed: int = 0):
    """A translation model trained for a few steps on tiny settings (equality checks need no quality)."""
    from tlgan.translate import train_translation

    return train_translation(
        generator,
        axes,
        "Smiling",
        out,
        amount=1.5,
        identity_steps=4,
        edit_steps=4,
        batch_size=4,
        width=4,
        depth=2,
        seed=seed,
        checkpoint_every=100,
        progress=False,
    )


@pytest.fixture(scope="session")
def translation_64(tmp_path_factory):
    G = load_generator("toyfaces-render")
    out = tmp_path_factory.mktemp("translation") / "smiling"
    return tiny_translation(G, G.true_axes(), out), out


class StandIn:
    """invert_image's stand-in: records the bytes it got and answers a fixed latent; given a
    ``release`` event, it answers only once the test sets it."""

    def __init__(self, latent: torch.Tensor, release: threading.Event | None = None):
        self.latent = latent
        self.release = release
        self.received: list[bytes] = []

    def __call__(self, generator, classifier, image_bytes, **options):
        self.received.append(image_bytes)
        if self.release is not None:
            assert self.release.wait(120), "the test never let the inversion answer"
        with torch.inference_mode():
            return self.latent.clone(), generator.synthesize(self.latent[None])[0], {"psnr_db": 20.0}


@needs_dlib
def test_an_aligned_upload_is_tlgan_aligns_face_and_the_download_is_tlgan_edits_paste_back(
    models, astronaut, tmp_path, monkeypatch
):
    from click.testing import CliRunner

    from tlgan.alignment import FaceTransform, paste_mask
    from tlgan.alignment.files import transform_path
    from tlgan.cli import cli
    from tlgan.editing.latent_file import save_latent

    G, F, axes, axes_path = models
    latent = G.sample_latents_at([17], seed=0)[0]
    stand_in = StandIn(latent)
    monkeypatch.setattr(tlgan.inversion, "invert_image", stand_in, raising=False)
    client = TestClient(create_app(G, F, axes, generator_name="toyfaces-render", align="ffhq"))
    assert client.get("/api/attributes").json()["align"] == "ffhq"
    photo_bytes = astronaut.read_bytes()
    reply = client.post("/api/invert", files={"file": ("astronaut.png", photo_bytes, "image/png")})
    assert reply.status_code == 200, reply.text
    body = reply.json()

    # The aligned face is the one `tlgan align` cuts at the generator's resolution, and it is what was inverted.
    runner = CliRunner()
    aligned_dir = tmp_path / "aligned"
    result = runner.invoke(
        cli, ["align", str(astronaut), "--out", str(aligned_dir), "--size", "64", "--face", "largest"]
    )
    assert result.exit_code == 0, result.output
    cli_face = pixels((aligned_dir / "astronaut.png").read_bytes())
    assert np.array_equal(from_data_url(body["aligned_image"]), cli_face)
    assert len(stand_in.received) == 1 and np.array_equal(pixels(stand_in.received[0]), cli_face)
    cli_transform = json.loads((aligned_dir / "astronaut.align.json").read_text())
    assert np.allclose(body["alignment"]["aligned_to_photo"], cli_transform["aligned_to_photo"])

    # The download: the photo with the edit pasted back, as `tlgan edit --paste-back` writes it.
    amounts = {"Smiling": 2.0, "Beard": -1.0}
    request = {"latent": body["latent"], "amounts": amounts, "locks": [], "alignment": body["alignment"]}
    pasted = client.post(
        "/api/paste-back",
        files={"file": ("astronaut.png", photo_bytes, "image/png")},
        data={"request": json.dumps(request)},
    )
    assert pasted.status_code == 200, pasted.text
    studio_photo = pixels(pasted.content)
    latent_path = tmp_path / "astronaut.safetensors"
    save_latent(latent_path, torch.tensor(body["latent"]), space="z", generator="toyfaces-render")
    transform = FaceTransform.load(aligned_dir / "astronaut.align.json").resized(64)
    transform = FaceTransform(**{**transform.__dict__, "source": str(astronaut)})
    transform.save(transform_path(latent_path))
    out = tmp_path / "cli-photo.png"
    args = ["edit", "--generator", "toyfaces-render", "--axes", str(axes_path), "--latent", str(latent_path)]
    args += ["--attr", "Smiling=2", "--attr", "Beard=-1", "--paste-back", "--out", str(out)]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    cli_photo = pixels(out.read_bytes())
    photo = np.asarray(Image.open(astronaut).convert("RGB"))
    assert studio_photo.shape == photo.shape
    # The same floats (one face per draw, as the CLI draws), the same pixels.
    assert np.array_equal(studio_photo, cli_photo)
    mask, (x0, y0) = paste_mask(transform)
    weight = np.zeros(photo.shape[:2], np.float32)
    weight[y0 : y0 + mask.shape[0], x0 : x0 + mask.shape[1]] = mask
    assert np.array_equal(studio_photo[weight == 0], photo[weight == 0])
    assert np.abs(studio_photo.astype(int) - photo)[weight > 0.5].mean() > 1  # the edit did change the face

    # A malformed alignment is a clear 422, not a crash.
    bad = client.post(
        "/api/paste-back",
        files={"file": ("astronaut.png", photo_bytes, "image/png")},
        data={"request": json.dumps({**request, "alignment": {"size": 64}})},
    )
    assert bad.status_code == 422 and "alignment" in bad.json()["detail"]


@needs_dlib
def test_a_photo_without_a_face_gets_a_clear_error(models, monkeypatch):
    G, F, axes, _ = models
    stand_in = StandIn(G.sample_latents_at([1], seed=0)[0])
    monkeypatch.setattr(tlgan.inversion, "invert_image", stand_in, raising=False)
    client = TestClient(create_app(G, F, axes, align="ffhq"))
    wall = np.full((200, 240, 3), 128, np.uint8)
    buf = io.BytesIO()
    Image.fromarray(wall).save(buf, format="PNG")
    reply = client.post("/api/invert", files={"file": ("wall.png", buf.getvalue(), "image/png")})
    assert reply.status_code == 422
    assert "wall.png: no face found" in reply.json()["detail"]
    assert stand_in.received == []  # nothing was inverted


def test_align_without_the_extra_says_how_to_install_it(models, monkeypatch):
    import tlgan.alignment.landmarks as landmarks

    def missing():
        raise TlganError(f"face alignment needs dlib, which is not installed: {landmarks.INSTALL_HINT}")

    monkeypatch.setattr(landmarks, "_dlib", missing)
    G, F, axes, _ = models
    with pytest.raises(TlganError, match=r"pip install 'tlgan\[align\]'"):
        create_app(G, F, axes, align="ffhq")
    from click.testing import CliRunner

    from tlgan.cli import cli

    result = CliRunner().invoke(
        cli, ["serve", "--generator", "toyfaces-render", "--align", "ffhq", "--port", "0"]
    )
    # Refused before any axis fitting (the cached default axes of this pair are not needed for it).
    assert result.exit_code != 0 and "pip install 'tlgan[align]'" in result.output + str(result.exception)


def test_the_translation_row_is_translate_on_the_uploaded_face(
    models, astronaut, translation_64, monkeypatch
):
    from tlgan.imaging import read_image, to_uint8
    from tlgan.translate import translate

    G, F, axes, _ = models
    model, _ = translation_64
    stand_in = StandIn(G.sample_latents_at([4], seed=0)[0])
    monkeypatch.setattr(tlgan.inversion, "invert_image", stand_in, raising=False)
    client = TestClient(create_app(G, F, axes, translations={"Smiling translation": model}))
    info = client.get("/api/attributes").json()
    assert info["translations"] == [{"name": "Smiling translation", "attribute": "Smiling", "amount": 1.5}]
    assert "Smiling translation" not in [a["name"] for a in info["attributes"]]
    body = client.post("/api/invert", files={"file": ("a.png", astronaut.read_bytes(), "image/png")}).json()
    face, _ = read_image(astronaut.read_bytes(), 64)
    assert np.array_equal(from_data_url(body["input_image"]), to_uint8(face))
    # The face the page sends back is the 8-bit one it was given: translate() of exactly that.
    face8 = torch.from_numpy(to_uint8(face)).permute(2, 0, 1).float() / 127.5 - 1.0
    for amount in (0.0, 0.75, 1.5, 3.0):
        reply = client.post(
            "/api/translate", json={"image": body["input_image"], "amounts": {"Smiling translation": amount}}
        )
        assert reply.status_code == 200, reply.text
        with torch.inference_mode():
            want = encode_png(translate(face8[None], model, amount)[0])
        assert reply.content == want, amount
    zero = client.post("/api/translate", json={"image": body["input_image"]}).content
    half = client.post(
        "/api/translate", json={"image": body["input_image"], "amounts": {"Smiling translation": 1.5}}
    )
    assert zero != half.content  # the row moves the photo
    unknown = client.post("/api/translate", json={"image": body["input_image"], "amounts": {"Smile": 1}})
    assert unknown.status_code == 422 and "Smiling translation" in unknown.json()["detail"]
    small = client.post("/api/translate", json={"image": "data:image/png;base64,AAAA", "amounts": {}})
    assert small.status_code == 422 and "64 x 64 PNG" in small.json()["detail"]


def test_a_translation_of_another_resolution_is_refused_at_start(models, translation_64, tmp_path):
    from stylegan_fixtures import tiny_stylegan2
    from tlgan.studio.photos import check_photo_options

    G, F, axes, _ = models
    _, folder = translation_64
    G32 = tiny_stylegan2()
    with pytest.raises(TlganError, match=r"works at 64 px, but generator 'tiny' draws 32 px"):
        check_photo_options(G32, "tiny", [str(folder)], None, "cpu")
    rows = check_photo_options(G, "toyfaces-render", [str(folder), str(folder)], None, "cpu")
    assert list(rows) == ["Smiling translation", "Smiling translation 2"]
    model, _ = translation_64
    from test_studio_spaces import NAMES, w_axes

    with pytest.raises(TlganError, match="works at 64 px"):
        create_app(G32, small_classifier(NAMES), w_axes(G32), translations={"x": model})


def test_serve_refuses_a_translation_of_another_resolution_before_fitting(tmp_path):
    from click.testing import CliRunner

    from tlgan.cli import cli
    from tlgan.translate import TranslationModel, TranslationNet

    folder = tmp_path / "at32"
    TranslationModel(TranslationNet(32, 4, 2), TranslationNet(32, 4, 2), "Smiling", 1.0).save(folder)
    args = ["serve", "--generator", "toyfaces-render", "--translation", str(folder), "--port", "0"]
    result = CliRunner().invoke(cli, args)
    message = result.output + str(result.exception)
    assert result.exit_code != 0
    assert "works at 32 px, but generator 'toyfaces-render' draws 64 px faces" in message
