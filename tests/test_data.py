"""Data loading: CelebA-layout parsing and its errors, image decoding and caching, batches."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tlgan.data import (
    BatchSampler,
    CelebAFolder,
    ImageFolder,
    decode_image,
    parse_attribute_file,
    to_float_images,
)
from tlgan.data.celeba import default_partition
from tlgan.errors import TlganError

ATTRS = ["Square", "Bright"]


def draw_face(rng: np.random.Generator, square: bool, bright: bool, size: int) -> np.ndarray:
    """A (size, size, 3) uint8 picture: noisy background (light if ``bright``), a red square if ``square``."""
    base = 170 if bright else 60
    img = np.clip(base + rng.normal(0, 12, (size, size, 3)), 0, 255).astype(np.uint8)
    if square:
        s = size // 3
        y, x = rng.integers(0, size - s, 2)
        img[y : y + s, x : x + s] = (230, 20, 20)
    return img


def make_celeba(
    root: Path,
    n: int = 40,
    size: int = 16,
    partition: bool = True,
    seed: int = 0,
    ext: str = ".png",
    spaces: str = " ",
) -> tuple[Path, np.ndarray]:
    """A CelebA-layout folder of ``n`` pictures; returns (root, labels (n, 2) of 0/1).

    Rows go train/val/test in the pattern 0,0,0,...,1,2 so every split has both classes.
    """
    rng = np.random.default_rng(seed)
    (root / "img_align_celeba").mkdir(parents=True, exist_ok=True)
    labels = np.stack([np.arange(n) % 2, (np.arange(n) // 2) % 2], axis=1)
    rng.shuffle(labels)
    rows, parts = [], []
    for i in range(n):
        name = f"{i + 1:06d}{ext}"
        picture = draw_face(rng, bool(labels[i, 0]), bool(labels[i, 1]), size)
        Image.fromarray(picture).save(root / "img_align_celeba" / name)
        rows.append(name + spaces + spaces.join("1" if v else "-1" for v in labels[i]))
        parts.append(f"{name} {0 if i % 5 < 3 else (1 if i % 5 == 3 else 2)}")
    (root / "list_attr_celeba.txt").write_text(f"{n}\n{' '.join(ATTRS)} \n" + "\n".join(rows) + "\n")
    if partition:
        (root / "list_eval_partition.txt").write_text("\n".join(parts) + "\n")
    return root, labels


def _set_attr_lines(root: Path, edit) -> None:
    path = root / "list_attr_celeba.txt"
    lines = path.read_text().splitlines()
    edit(lines)
    path.write_text("\n".join(lines) + "\n")


def test_parses_labels_splits_and_pixels(tmp_path):
    root, labels = make_celeba(tmp_path / "d", n=20, spaces="  ")
    allset = CelebAFolder(root, "all", resolution=16, progress=False)
    assert allset.attributes == ("Square", "Bright")
    assert torch.equal(allset.labels, torch.from_numpy(labels.astype(np.float32)))
    # Same size and square: decoding must give back the exact pixels written.
    first = np.array(Image.open(root / "img_align_celeba" / "000001.png")).transpose(2, 0, 1)
    assert torch.equal(allset.images[0], torch.from_numpy(first))
    sizes = {s: len(CelebAFolder(root, s, resolution=16, progress=False)) for s in ("train", "val", "test")}
    assert sizes == {"train": 12, "val": 4, "test": 4}
    test = CelebAFolder(root, "test", resolution=16, progress=False)
    assert test.filenames == [f"{i + 1:06d}.png" for i in range(20) if i % 5 == 4]
    assert torch.equal(test.labels, torch.from_numpy(labels[4::5].astype(np.float32)))


def test_split_by_row_without_partition_file(tmp_path):
    root, labels = make_celeba(tmp_path / "d", n=30, partition=False)
    train = CelebAFolder(root, "train", resolution=16, progress=False)
    val = CelebAFolder(root, "val", resolution=16, progress=False)
    test = CelebAFolder(root, "test", resolution=16, progress=False)
    assert (len(train), len(val), len(test)) == (24, 3, 3)
    assert test.filenames == ["000028.png", "000029.png", "000030.png"]
    assert torch.equal(train.labels, torch.from_numpy(labels[:24].astype(np.float32)))
    assert list(np.bincount(default_partition(1000))) == [800, 100, 100]


def test_zero_values_read_as_negative_and_jpg_names_match_png_files(tmp_path):
    root, labels = make_celeba(tmp_path / "d", n=10, partition=False)
    _set_attr_lines(
        root,
        lambda lines: lines.__setitem__(
            slice(2, None), [line.replace(".png", ".jpg").replace("-1", "0") for line in lines[2:]]
        ),
    )
    data = CelebAFolder(root, "all", resolution=16, progress=False)
    assert torch.equal(data.labels, torch.from_numpy(labels.astype(np.float32)))


def test_wrong_value_count_names_file_and_line(tmp_path):
    root, _ = make_celeba(tmp_path / "d", n=10)
    _set_attr_lines(root, lambda lines: lines.__setitem__(4, lines[4] + " 1"))
    with pytest.raises(
        TlganError, match=r"list_attr_celeba\.txt, line 5: 000003\.png has 3 values .* 2 attributes"
    ):
        CelebAFolder(root, "train", resolution=16, progress=False)


def test_bad_value_names_file_line_and_attribute(tmp_path):
    root, _ = make_celeba(tmp_path / "d", n=10)
    _set_attr_lines(root, lambda lines: lines.__setitem__(6, "000005.png 1 2"))
    with pytest.raises(TlganError, match=r"line 7: value '2' for attribute 'Bright'"):
        parse_attribute_file(root / "list_attr_celeba.txt")


def test_count_line_and_duplicates_are_checked(tmp_path):
    root, _ = make_celeba(tmp_path / "d", n=10)
    _set_attr_lines(root, lambda lines: lines.__setitem__(0, "11"))
    with pytest.raises(TlganError, match=r"line 1: says 11 images but the file has 10 rows"):
        parse_attribute_file(root / "list_attr_celeba.txt")
    _set_attr_lines(root, lambda lines: (lines.__setitem__(0, "10"), lines.__setitem__(5, lines[3])))
    with pytest.raises(TlganError, match=r"line 6: 000002\.png is listed again \(first on line 4\)"):
        parse_attribute_file(root / "list_attr_celeba.txt")


def test_missing_image_names_line(tmp_path):
    root, _ = make_celeba(tmp_path / "d", n=10, partition=False)
    (root / "img_align_celeba" / "000004.png").unlink()
    with pytest.raises(TlganError, match=r"line 6: image 000004\.png is listed but not found"):
        CelebAFolder(root, "train", resolution=16, progress=False)


def test_missing_pieces_and_empty_folder(tmp_path):
    with pytest.raises(TlganError, match="data folder not found"):
        CelebAFolder(tmp_path / "nowhere", progress=False)
    (tmp_path / "e" / "img_align_celeba").mkdir(parents=True)
    with pytest.raises(TlganError, match="list_attr_celeba.txt"):
        CelebAFolder(tmp_path / "e", progress=False)
    (tmp_path / "e" / "list_attr_celeba.txt").write_text("1\nSquare\n000001.png 1\n")
    with pytest.raises(TlganError, match="no images found"):
        CelebAFolder(tmp_path / "e", "all", progress=False)
    with pytest.raises(TlganError, match="no images found"):
        ImageFolder(tmp_path / "e", progress=False)
    root, _ = make_celeba(tmp_path / "d", n=10)
    (root / "list_eval_partition.txt").write_text("000001.png 0\n000002.png 3\n")
    with pytest.raises(TlganError, match=r"list_eval_partition\.txt, line 2"):
        CelebAFolder(root, progress=False)


def test_decode_crops_centre_and_resizes(tmp_path):
    # 30 wide x 10 high: the centre 10x10 is green, the sides red.
    img = np.zeros((10, 30, 3), dtype=np.uint8)
    img[:, :10] = img[:, 20:] = (255, 0, 0)
    img[:, 10:20] = (0, 255, 0)
    Image.fromarray(img).save(tmp_path / "wide.png")
    out = decode_image(tmp_path / "wide.png", 10)
    assert out.shape == (3, 10, 10) and (out[1] == 255).all() and (out[0] == 0).all()
    small = decode_image(tmp_path / "wide.png", 4)
    assert (small[1] == 255).all()
    # A greyscale JPEG becomes RGB.
    Image.fromarray(np.full((12, 12), 128, dtype=np.uint8)).save(tmp_path / "grey.jpg")
    grey = decode_image(tmp_path / "grey.jpg", 12)
    assert grey.shape == (3, 12, 12) and abs(int(grey.mean()) - 128) <= 1
    (tmp_path / "broken.png").write_bytes(b"not an image")
    with pytest.raises(TlganError, match="broken.png: cannot decode"):
        decode_image(tmp_path / "broken.png", 8)


def test_cache_is_reused_and_rebuilt_when_labels_change(tmp_path, monkeypatch):
    root, _ = make_celeba(tmp_path / "d", n=10, partition=False)
    first = CelebAFolder(root, "all", resolution=8, progress=False)
    cache = root / ".tlgan-cache" / "celeba-all-8px.npy"
    assert cache.is_file()
    import tlgan.data.images as images_mod

    def fail(*a, **k):
        raise AssertionError("decoded although the cache was valid")

    monkeypatch.setattr(images_mod, "decode_image", fail)
    again = CelebAFolder(root, "all", resolution=8, progress=False)
    assert torch.equal(again.images, first.images)
    # A newer attribute file invalidates the cache.
    attr = root / "list_attr_celeba.txt"
    later = cache.stat().st_mtime + 10
    os.utime(attr, (later, later))
    with pytest.raises(AssertionError, match="decoded although"):
        CelebAFolder(root, "all", resolution=8, progress=False)


def test_image_folder_is_recursive_and_accepts_celeba_root(tmp_path):
    root, _ = make_celeba(tmp_path / "d", n=6)
    assert len(ImageFolder(root, resolution=8, progress=False)) == 6
    nested = tmp_path / "nested"
    (nested / "a" / "b").mkdir(parents=True)
    rng = np.random.default_rng(1)
    for name in ("x.png", "a/y.jpg", "a/b/z.PNG"):
        Image.fromarray(draw_face(rng, True, False, 16)).save(nested / name)
    (nested / "notes.txt").write_text("not an image")
    folder = ImageFolder(nested, resolution=8, progress=False)
    assert [p.relative_to(nested).as_posix() for p in folder.paths] == ["a/b/z.PNG", "a/y.jpg", "x.png"]
    # Adding an image rebuilds the cache instead of serving a stale one.
    Image.fromarray(draw_face(rng, False, True, 16)).save(nested / "w.png")
    assert len(ImageFolder(nested, resolution=8, progress=False)) == 4


def test_batches_cover_each_epoch_once_and_depend_only_on_seed_and_step():
    images = torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1).expand(10, 3, 2, 2).contiguous()
    labels = torch.arange(10, dtype=torch.float32)[:, None]
    sampler = BatchSampler(images, labels, batch_size=4, seed=3)
    seen = torch.cat([sampler.indices(k)[0] for k in range(5)])  # 20 items = 2 epochs
    assert sorted(seen[:10].tolist()) == list(range(10)) and sorted(seen[10:].tolist()) == list(range(10))
    assert not torch.equal(seen[:10], seen[10:])
    fresh = BatchSampler(images, labels, batch_size=4, seed=3)
    assert torch.equal(fresh.indices(3)[0], seen[12:16])  # random access, no history needed
    x, y = sampler.batch(2)
    assert torch.equal(y[:, 0], sampler.indices(2)[0].float())
    assert torch.allclose(x[:, 0, 0, 0], y[:, 0] / 127.5 - 1)
    assert not torch.equal(BatchSampler(images, labels, 4, seed=4).indices(0)[0], seen[:4])
    # Batches larger than the data set wrap around epochs.
    assert len(BatchSampler(images, batch_size=25, seed=0).indices(0)[0]) == 25


def test_float_conversion_and_flips():
    assert torch.equal(to_float_images(torch.tensor([0, 255], dtype=torch.uint8)), torch.tensor([-1.0, 1.0]))
    ramp = torch.arange(4, dtype=torch.uint8).view(1, 1, 1, 4).expand(64, 3, 4, 4).contiguous()
    sampler = BatchSampler(ramp, batch_size=64, seed=0, flip=True)
    x, _ = sampler.batch(0)
    flips = sampler.indices(0)[1]
    assert 10 < int(flips.sum()) < 54
    assert torch.equal(x[flips], to_float_images(ramp[:1]).flip(-1).expand(int(flips.sum()), 3, 4, 4))
    assert torch.equal(x[~flips], to_float_images(ramp[:1]).expand(int((~flips).sum()), 3, 4, 4))
    x2, _ = BatchSampler(ramp, batch_size=64, seed=0, flip=True).batch(0)
    assert torch.equal(x, x2)


def test_data_sets_decode_like_photos(tmp_path, monkeypatch):
    """Training images go through the photo decoder: upright by their EXIF orientation, and
    decompression bombs refused (also in the range where Pillow only warns)."""
    # stored 20 wide x 10 high, left half red, right half green; EXIF orientation 6: turn 90° clockwise
    img = np.zeros((10, 20, 3), dtype=np.uint8)
    img[:, :10] = (255, 0, 0)
    img[:, 10:] = (0, 255, 0)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(img).save(tmp_path / "turned.png", exif=exif)
    out = decode_image(tmp_path / "turned.png", 10)  # upright: 10 wide x 20 high, red on top
    assert (out[:, :4] == np.array([255, 0, 0])[:, None, None]).all()
    assert (out[:, 6:] == np.array([0, 255, 0])[:, None, None]).all()
    Image.fromarray(np.zeros((120, 120, 3), dtype=np.uint8)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)  # 120 x 120 = 1.44 x the limit
    with pytest.raises(TlganError, match="big.png: cannot decode this image .*decompression bomb"):
        decode_image(tmp_path / "big.png", 8)
