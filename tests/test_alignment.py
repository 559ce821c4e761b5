"""Face alignment: FFHQ's crop from 68 landmarks, dlib detection on a real photo, paste-back.

The real photo is scikit-image's astronaut.png (a public-domain NASA portrait, 512x512), a
test-only dependency; dlib and its landmark model come with the ``align`` extra.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tlgan.alignment import FaceTransform, NoFaceFound, align_face, ffhq_quad, paste_back, paste_mask
from tlgan.alignment.ffhq import canonical_quad, eyes_and_mouth
from tlgan.errors import TlganError


def synthetic_landmarks(angle_deg: float = 0.0, scale: float = 1.0, shift=(0.0, 0.0)) -> np.ndarray:
    """68 points whose eye centres are (-1, 0), (1, 0) and mouth corners (-0.8, 2.2), (0.8, 2.2), moved."""
    lm = np.zeros((68, 2))
    ring = 0.2 * np.stack([np.cos(np.arange(6) * np.pi / 3), np.sin(np.arange(6) * np.pi / 3)], 1)
    lm[36:42] = np.array([-1.0, 0.0]) + ring
    lm[42:48] = np.array([1.0, 0.0]) + ring
    lm[48], lm[54] = (-0.8, 2.2), (0.8, 2.2)
    a = math.radians(angle_deg)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    return lm @ rot.T * scale + np.asarray(shift)


# ----------------------------------------------------------------------------------------
# The geometry (no dlib)
# ----------------------------------------------------------------------------------------


def test_ffhq_quad_matches_the_closed_form():
    # eye_to_eye (2, 0), eye_to_mouth (0, 2.2): x = (2, 0) - rot90(0, 2.2) = (4.2, 0), scaled to
    # max(2 * 2, 1.8 * 2.2) = 4; y = (0, 4); c = eye_avg + 0.1 * eye_to_mouth = (0, 0.22).
    quad = ffhq_quad(synthetic_landmarks())
    expected = np.array([[-4, -3.78], [-4, 4.22], [4, 4.22], [4, -3.78]])
    assert np.allclose(quad, expected, atol=1e-12)
    # A longer face: the eye-to-mouth term wins the max (1.8 * 3 = 5.4 > 4).
    lm = synthetic_landmarks()
    lm[48], lm[54] = (-0.8, 3.0), (0.8, 3.0)
    assert np.allclose(ffhq_quad(lm)[2], [5.4, 0.3 + 5.4], atol=1e-12)


def test_ffhq_quad_moves_with_the_face():
    # Rotating, scaling and shifting the landmarks does the same to the quad (a similarity).
    base = ffhq_quad(synthetic_landmarks())
    a = math.radians(20)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    moved = ffhq_quad(synthetic_landmarks(20, 37.0, (300, 200)))
    assert np.allclose(moved, base @ rot.T * 37.0 + [300, 200], atol=1e-9)


def test_transform_maps_the_crop_onto_the_quad_and_back(tmp_path):
    quad = ffhq_quad(synthetic_landmarks(-12, 40.0, (250, 180)))
    t = FaceTransform.from_quad(quad, 256, (500, 400))
    assert np.allclose(t.to_photo(canonical_quad(256)), quad, atol=1e-9)
    points = np.array([[10.0, 20.0], [128.0, 128.0], [255.0, 3.0]])
    assert np.allclose(t.to_aligned(t.to_photo(points)), points, atol=1e-9)
    # Resizing keeps the square: the corners of a 64 px crop land on the same quad.
    assert np.allclose(t.resized(64).to_photo(canonical_quad(64)), quad, atol=1e-9)
    again = FaceTransform.load(t.save(tmp_path / "t.json"))
    assert np.array_equal(again.matrix, t.matrix) and again.size == 256 and again.photo_size == (500, 400)
    (tmp_path / "bad.json").write_text('{"format": "something else"}')
    with pytest.raises(TlganError, match="not an alignment transform"):
        FaceTransform.load(tmp_path / "bad.json")


def test_align_face_warps_a_planted_pattern_to_the_crop():
    # A photo whose colour encodes the position: the aligned crop samples it where the transform says.
    H, W = 300, 400
    yy, xx = np.mgrid[0:H, 0:W]
    photo = np.stack([xx * 255 // (W - 1), yy * 255 // (H - 1), np.full_like(xx, 128)], -1).astype(np.uint8)
    lm = synthetic_landmarks(10, 12.0, (200, 140))
    crop, t = align_face(photo, lm, 64)
    u = np.array([[8.0, 8.0], [32.0, 40.0], [56.0, 20.0]])
    p = t.to_photo(u)
    for (cu, cv), (px, py) in zip(u.astype(int), p, strict=True):
        assert abs(int(crop[cv, cu, 0]) - px * 255 / (W - 1)) <= 2
        assert abs(int(crop[cv, cu, 1]) - py * 255 / (H - 1)) <= 2


def test_bad_landmarks_are_refused():
    with pytest.raises(TlganError, match="68"):
        ffhq_quad(np.zeros((5, 2)))
    with pytest.raises(TlganError, match="degenerate"):
        ffhq_quad(np.zeros((68, 2)))


def test_without_dlib_the_error_says_how_to_install(monkeypatch):
    from tlgan.alignment import LandmarkDetector

    monkeypatch.setitem(sys.modules, "dlib", None)
    with pytest.raises(TlganError, match=r"pip install 'tlgan\[align\]'"):
        LandmarkDetector()


# ----------------------------------------------------------------------------------------
# A real photo (dlib + scikit-image)
# ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def detector():
    pytest.importorskip("dlib", reason="face alignment needs the align extra")
    from tlgan.alignment import LandmarkDetector

    return LandmarkDetector()


@pytest.fixture(scope="module")
def astronaut():
    data = pytest.importorskip("skimage.data", reason="the real photo comes with scikit-image")
    return data.astronaut()


KEY_POINTS = ("eye_left", "eye_right", "mouth_left", "mouth_right")


def test_astronaut_aligns_to_ffhq_positions(detector, astronaut):
    from tlgan.alignment import align_photo

    (face,) = align_photo(astronaut, size=1024, detector=detector)
    assert face.image.shape == (1024, 1024, 3) and face.transform.faces_found == 1
    (again,) = detector(face.image)
    # Found again in the crop, the eyes and mouth make FFHQ's square the crop itself...
    assert np.abs(ffhq_quad(again.landmarks) - canonical_quad(1024)).max() < 0.02 * 1024
    # ... and each of them lies where the transform puts the photo's own landmarks.
    expected = eyes_and_mouth(face.transform.to_aligned(face.transform.landmarks))
    found = eyes_and_mouth(again.landmarks)
    for key in KEY_POINTS:
        assert np.abs(found[key] - expected[key]).max() < 0.02 * 1024, key
    # FFHQ's layout: eyes level, about 0.37 and 0.63 across; the mouth below the centre.
    assert abs(found["eye_left"][1] - found["eye_right"][1]) < 0.02 * 1024
    assert 0.3 < found["eye_left"][0] / 1024 < 0.42 and 0.58 < found["eye_right"][0] / 1024 < 0.7
    assert 0.68 < (found["mouth_left"][1] + found["mouth_right"][1]) / 2048 < 0.8


def _rotated_into_canvas(photo: np.ndarray) -> np.ndarray:
    """``photo`` scaled by 0.6, rotated by 15 degrees and pasted at (110, 70) into a 640x600 grey canvas."""
    side = round(photo.shape[1] * 0.6)
    small = Image.fromarray(photo).resize((side, side), Image.LANCZOS)
    turned = small.rotate(15, resample=Image.BICUBIC, expand=True, fillcolor=(128, 128, 128))
    canvas = Image.new("RGB", (640, 600), (128, 128, 128))
    canvas.paste(turned, (110, 70))
    return np.asarray(canvas)


def test_rotated_scaled_shifted_photo_aligns_to_the_same_crop(detector, astronaut):
    from tlgan.alignment import align_photo

    # Reflect the astronaut outward first, so both versions hold the same pixels around the face.
    base = np.pad(astronaut, ((64, 64), (64, 64), (0, 0)), mode="reflect")
    moved = _rotated_into_canvas(base)
    (a,) = align_photo(base, size=256, face="largest", detector=detector)
    (b,) = align_photo(moved, size=256, face="largest", detector=detector)
    diff = np.abs(a.image.astype(np.float64) - b.image.astype(np.float64)) / 255.0
    assert diff.mean() <= 0.04, diff.mean()
    # The transforms differ by the planted similarity: scale 0.6 between the two squares.
    assert b.transform.scale / a.transform.scale == pytest.approx(0.6, rel=0.03)


def test_two_faces_side_by_side_give_two_crops_left_to_right(detector, astronaut):
    from tlgan.alignment import align_photo

    pair = np.concatenate([astronaut, astronaut], axis=1)
    faces = align_photo(pair, size=256, detector=detector)
    assert [f.transform.face for f in faces] == [1, 2]
    shift = faces[1].transform.matrix[0, 2] - faces[0].transform.matrix[0, 2]
    assert shift == pytest.approx(512, abs=3)
    diff = np.abs(faces[0].image.astype(int) - faces[1].image.astype(int)).mean() / 255
    assert diff < 0.02
    (second,) = align_photo(pair, size=64, face=2, detector=detector)
    assert np.allclose(second.transform.matrix, faces[1].transform.resized(64).matrix, atol=1e-6)
    with pytest.raises(NoFaceFound, match="face 3 from the left"):
        align_photo(pair, size=64, face=3, detector=detector, label="pair.png")


def test_a_photo_without_a_face_is_a_clear_error(detector):
    from tlgan.alignment import align_photo

    yy, xx = np.mgrid[0:300, 0:400]
    sky = np.stack([xx % 256, yy % 256, (xx + yy) % 256], -1).astype(np.uint8)
    with pytest.raises(NoFaceFound, match=r"sky\.png: no face found"):
        align_photo(sky, detector=detector, label="sky.png")


def test_a_6000x4000_photo_is_shrunk_for_detection(detector, astronaut):
    # The astronaut scaled 7.8x into a 24 MP frame: found in a 640 px view, landmarks placed at full size.
    scale = 4000 / 512
    big = np.asarray(Image.fromarray(astronaut).resize((4000, 4000), Image.BILINEAR))
    big = np.pad(big, ((0, 0), (1000, 1000), (0, 0)), mode="edge")
    (small_face,) = [f for f in detector(astronaut) if f.score > 1]
    faces = detector(big)
    face = max(faces, key=lambda f: f.score)
    expected = (small_face.landmarks + 0.5) * scale - 0.5 + [1000, 0]
    key = [36, 39, 42, 45, 48, 54]
    # Within 2 % of the face square's side (240 px in the original).
    assert np.abs(face.landmarks[key] - expected[key]).max() < 0.02 * 240 * scale
    from tlgan.alignment import align_photo

    (aligned,) = align_photo(big, size=256, face="largest", detector=detector)
    (reference,) = align_photo(astronaut, size=256, detector=detector)
    assert np.abs(aligned.image.astype(float) - reference.image.astype(float)).mean() / 255 < 0.04


# ----------------------------------------------------------------------------------------
# Paste-back
# ----------------------------------------------------------------------------------------


def test_paste_back_round_trip_and_edits_stay_inside_the_mask(detector, astronaut):
    from tlgan.alignment import align_photo

    (face,) = align_photo(astronaut, size=1024, detector=detector)
    mask, (x0, y0) = paste_mask(face.transform)
    inside = np.zeros(astronaut.shape[:2], bool)
    inside[y0 : y0 + mask.shape[0], x0 : x0 + mask.shape[1]] = mask > 0
    assert 0.05 < inside.mean() < 0.5
    back = paste_back(astronaut, face.image, face.transform)
    diff = np.abs(back.astype(int) - astronaut.astype(int))
    assert np.array_equal(back[~inside], astronaut[~inside])
    # Resampled twice (photo -> crop -> photo), the face comes back within 2/255 on average.
    assert diff[inside].mean() <= 2.0, diff[inside].mean()
    # Pasting only the change against the unedited crop gives the photo back exactly.
    assert np.array_equal(paste_back(astronaut, face.image, face.transform, reference=face.image), astronaut)

    # An edit (a generator's 64 px output, here the crop with its colours inverted) changes only masked pixels.
    edit = 255 - np.asarray(Image.fromarray(face.image).resize((64, 64), Image.LANCZOS))
    for reference in (None, np.asarray(Image.fromarray(face.image).resize((64, 64), Image.LANCZOS))):
        pasted = paste_back(astronaut, edit, face.transform, reference=reference)
        assert np.array_equal(pasted[~inside], astronaut[~inside])
        changed = np.abs(pasted.astype(int) - astronaut.astype(int)).max(-1) > 0
        assert changed[inside].mean() > 0.9
    with pytest.raises(TlganError, match="paste into the photo it came from"):
        paste_back(astronaut[:500], face.image, face.transform)


# ----------------------------------------------------------------------------------------
# The commands
# ----------------------------------------------------------------------------------------


@pytest.fixture
def photo_folder(tmp_path, astronaut):
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.fromarray(astronaut).save(folder / "astro.png")
    Image.fromarray(np.concatenate([astronaut, astronaut], axis=1)).save(folder / "pair.png")
    (folder / "damaged.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    Image.fromarray(np.full((200, 300, 3), 90, np.uint8)).save(folder / "wall.png")
    return folder


def test_cli_align_a_folder_goes_on_past_bad_photos_and_resumes(detector, photo_folder, tmp_path):
    import json

    from click.testing import CliRunner

    from tlgan.cli import cli

    out = tmp_path / "aligned"
    args = ["align", str(photo_folder), "--out", str(out), "--size", "128", "--json"]
    first = CliRunner().invoke(cli, args)
    assert first.exit_code == 1, first.output
    report = json.loads(first.stdout)
    assert sorted(f["file"].rsplit("/", 1)[1] for f in report["failed"]) == ["damaged.png", "wall.png"]
    assert "no face found" in json.dumps(report["failed"])
    faces = {Path(f["aligned"]).name: f for p in report["photos"] for f in p["faces"]}
    assert sorted(faces) == ["astro.png", "pair-1.png", "pair-2.png"]
    astro = np.asarray(Image.open(out / "astro.png"))
    assert astro.shape == (128, 128, 3)
    t = FaceTransform.load(out / "astro.align.json")
    assert t.photo_size == (512, 512) and t.source == str((photo_folder / "astro.png").resolve())
    # The pair's right face is the astronaut's, 512 px to the right.
    right = FaceTransform.load(out / "pair-2.align.json")
    assert right.matrix[0, 2] - t.matrix[0, 2] == pytest.approx(512, abs=3)
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 1 and json.loads(again.stdout)["skipped"] == 2
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == stamps
    # Another face choice is another job: the largest face only, written as NAME.png.
    third = CliRunner().invoke(cli, [*args[:-1], "--face", "largest", "--json"])
    assert json.loads(third.stdout)["skipped"] == 0


GENERATOR_FACTORY = """
import torch
from tlgan.models import ModuleGenerator
from tlgan.models.networks import DCGANGenerator


def make():
    torch.manual_seed(0)
    net = DCGANGenerator(z_dim=16, resolution=16, width=4).eval()
    return ModuleGenerator(net, z_dim=16, name="my-dcgan")
"""


def test_cli_invert_aligned_then_edit_pasted_back(detector, astronaut, tmp_path):
    import json

    import torch
    from click.testing import CliRunner

    from tlgan.axes import FeatureAxes
    from tlgan.cli import cli
    from tlgan.models.formats.folder import save_pretrained
    from tlgan.models.networks import DCGANGenerator

    torch.manual_seed(0)
    gen = save_pretrained(DCGANGenerator(z_dim=16, resolution=16, width=4).eval(), tmp_path / "gen")
    photo = tmp_path / "me.png"
    Image.fromarray(astronaut).save(photo)
    out = tmp_path / "out"
    args = ["invert", str(photo), "--out", str(out), "--generator", str(gen), "--encoder", "none"]
    args += ["--steps", "5", "--align", "ffhq", "--json"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    row = json.loads(result.stdout)["images"][0]
    assert np.asarray(Image.open(row["aligned"])).shape == (16, 16, 3)
    assert row["alignment"] == str(out / "me.align.json") and row["photo"] == str(photo.resolve())
    again = CliRunner().invoke(cli, args)
    assert json.loads(again.stdout)["skipped"] == [
        {"file": str(photo), "latent": str(out / "me.safetensors")}
    ]

    axes = tmp_path / "axes.safetensors"
    FeatureAxes(torch.nn.functional.normalize(torch.randn(1, 16), dim=1), ["A"]).save(axes)
    transform = FaceTransform.load(out / "me.align.json")
    mask, (x0, y0) = paste_mask(transform)
    inside = np.zeros((512, 512), bool)
    inside[y0 : y0 + mask.shape[0], x0 : x0 + mask.shape[1]] = mask > 0

    def edit(amount: str, *extra: str) -> np.ndarray:
        args = ["edit", "--generator", str(gen), "--axes", str(axes), "--latent", str(out / "me.safetensors")]
        args += ["--attr", f"A={amount}", "--out", str(tmp_path / "edited.png"), "--paste-back", *extra]
        r = CliRunner().invoke(cli, args)
        assert r.exit_code == 0, r.output
        return np.asarray(Image.open(tmp_path / "edited.png"))

    # No change pastes nothing back; a change stays inside the face mask.
    assert np.array_equal(edit("0"), astronaut)
    for mode in ("change", "face"):
        pasted = edit("3", "--paste-mode", mode)
        assert pasted.shape == astronaut.shape
        assert np.array_equal(pasted[~inside], astronaut[~inside])
        assert (np.abs(pasted.astype(int) - astronaut.astype(int)).max(-1)[inside] > 0).mean() > 0.5
    refused = CliRunner().invoke(
        cli,
        [
            "edit",
            "--generator",
            str(gen),
            "--axes",
            str(axes),
            "--attr",
            "A=1",
            "--out",
            "x.png",
            "--paste-back",
        ],
    )
    assert isinstance(refused.exception, TlganError) and "--paste-back needs --latent" in str(
        refused.exception
    )

    # `tlgan invert --edit ... --paste-back`: the same in one command, for a new output folder.
    args[args.index(str(out))] = str(tmp_path / "out2")
    r = CliRunner().invoke(cli, [*args, "--edit", "A=3", "--axes", str(axes), "--paste-back"])
    assert r.exit_code == 0, r.output
    row = json.loads(r.stdout)["images"][0]
    assert np.asarray(Image.open(row["edited"])).shape == (16, 16, 3)
    pasted = np.asarray(Image.open(row["edited_photo"]))
    assert np.array_equal(pasted[~inside], astronaut[~inside]) and not np.array_equal(pasted, astronaut)
    r = CliRunner().invoke(cli, [*args, "--paste-back"])
    assert isinstance(r.exception, TlganError) and "add --edit" in str(r.exception)


@pytest.mark.slow
def test_bench_align_quick(detector):
    pytest.importorskip("skimage.data")
    from tlgan.bench.runner import run_bench

    out = run_bench(quick=True, only=["align"])
    for label in ("1mp", "12mp"):
        assert out[f"align_cpu_ms_per_photo_{label}"] > 0
        assert 0 < out[f"align_{label}_vs_full_detection_ratio"] < 1
    # float16 differences: half the bytes of full float32 weights (plus the small JSON), the same face.
    assert out["align_float16_delta_bytes_ratio"] == pytest.approx(0.5, abs=0.01)
    assert out["align_float16_delta_psnr_loss_db"] < 0.1
    assert out["align_tuned_psnr_db_full"] > out["align_untuned_psnr_db"]


def test_paste_back_leaves_the_padded_edge_alone(detector, astronaut):
    from tlgan.alignment import align_photo

    # Cut 60 rows off the top: FFHQ's square now leaves the photo, which is reflect-padded and
    # blurred near its top edge; those photo pixels are never pasted back.
    top_cut = np.ascontiguousarray(astronaut[60:])
    (face,) = align_photo(top_cut, size=1024, face="largest", detector=detector)
    assert face.transform.quad[:, 1].min() < 0
    margin = face.transform.margins[1]
    assert margin > 5 and face.transform.margins[0] == face.transform.margins[2] == 0
    back = paste_back(top_cut, face.image, face.transform)
    assert np.array_equal(back[: int(margin)], top_cut[: int(margin)])
    mask, (x0, y0) = paste_mask(face.transform)
    inside = np.zeros(top_cut.shape[:2], bool)
    inside[y0 : y0 + mask.shape[0], x0 : x0 + mask.shape[1]] = mask > 0
    diff = np.abs(back.astype(int) - top_cut.astype(int))
    assert diff[inside].mean() <= 2.0 and np.array_equal(back[~inside], top_cut[~inside])
