"""Face alignment: milliseconds per photo at 1 and 12 megapixels, and the bytes of a tuned generator per photo.

The photo is scikit-image's astronaut.png (a public-domain NASA portrait; scikit-image comes
with the ``bench`` and ``test`` extras) scaled so that its height fills a 4:3 frame of 1 MP
(1155x866) or 12 MP (4000x3000), the sides reflected: the face grows with the photo, as in a
camera's picture. Per photo, the best of a few runs of: detection (the photo shrunk to
``detect_side``) + 68 landmarks at full size (dlib, one thread) + FFHQ's warp to 1024 px. The
baseline of the same run is dlib's detector on the photo at full size without shrinking,
which is what shrinking saves (``align_12mp_vs_full_detection_ratio``, of CPU times: below 1
means faster). Wall and CPU milliseconds are both given: on a loaded machine the wall time
grows, the CPU time of these one-thread steps much less.
Decoding the file is not counted (it is the same for any aligner).

Storage: the astronaut, aligned to the bundled generator's 64 px, inverted and tuned; the
tuned folder's bytes with every weight (``full``) and as float16 differences from the base,
with the PSNR each reproduces the photo at (the difference is what the smaller form loses).
"""

from __future__ import annotations

import copy
import logging
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from tlgan.errors import TlganError

log = logging.getLogger(__name__)

TARGETS = {"align_ms_per_photo_1mp_max": 100.0, "float16_delta_psnr_loss_db_max": 0.1}
SIZES = {"1mp": (1155, 866), "12mp": (4000, 3000)}


def _photo(width: int, height: int) -> np.ndarray:
    from PIL import Image

    try:
        from skimage import data
    except ImportError:
        raise TlganError(
            "the align benchmark uses scikit-image's astronaut.png: pip install scikit-image"
        ) from None
    face = Image.fromarray(data.astronaut()).resize((height, height), Image.LANCZOS)
    side = (width - height) // 2
    arr = np.pad(np.asarray(face), ((0, 0), (side, width - height - side), (0, 0)), mode="reflect")
    return np.ascontiguousarray(arr)


def _best_ms(fn, repeats: int) -> tuple[float, float]:
    """(wall, CPU) milliseconds of the fastest of ``repeats`` calls; CPU time is what a shared machine's
    load does not inflate (dlib and Pillow run on one thread here)."""
    best = (float("inf"), float("inf"))
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        best = min(best, (time.perf_counter() - t0, time.process_time() - c0))
    return 1000.0 * best[0], 1000.0 * best[1]


def bench_align(quick: bool = False, device: str = "cpu") -> dict:
    """The figures described in the module docs, keys prefixed ``align_``."""
    from tlgan.alignment import LandmarkDetector, align_face

    repeats = 2 if quick else 5
    detector = LandmarkDetector()
    full_res = LandmarkDetector(detect_side=None, retry_upsample=False)
    out: dict = {"align_load_average_1min": round(os.getloadavg()[0], 2)}
    for label, (w, h) in SIZES.items():
        photo = _photo(w, h)
        faces = detector(photo)
        if not faces:
            raise TlganError(f"align bench: no face found in the {label} photo")
        out[f"align_faces_found_{label}"] = len(faces)
        landmarks = max(faces, key=lambda f: f.area).landmarks
        detect_ms, detect_cpu = _best_ms(lambda photo=photo: detector(photo), repeats)
        warp_ms, warp_cpu = _best_ms(lambda photo=photo, lm=landmarks: align_face(photo, lm, 1024), repeats)
        out[f"align_ms_per_photo_{label}"] = round(detect_ms + warp_ms, 1)
        out[f"align_cpu_ms_per_photo_{label}"] = round(detect_cpu + warp_cpu, 1)
        out[f"align_detect_landmarks_ms_{label}"] = round(detect_ms, 1)
        out[f"align_warp_1024_ms_{label}"] = round(warp_ms, 1)
        baseline, baseline_cpu = _best_ms(
            lambda photo=photo: full_res(photo), 1 if label == "12mp" else repeats
        )
        out[f"align_full_resolution_detect_ms_{label}"] = round(baseline, 1)
        out[f"align_{label}_vs_full_detection_ratio"] = round(detect_cpu / baseline_cpu, 3)
    out.update(_tuned_storage(quick, device))
    out["align_targets"] = TARGETS
    return out


def _tuned_storage(quick: bool, device: str) -> dict:
    import torch

    from tlgan.alignment import align_photo
    from tlgan.inversion import invert
    from tlgan.inversion.encoder import psnr_db
    from tlgan.inversion.tune import save_tuned, tune_generator
    from tlgan.models import load_generator
    from tlgan.models.formats.tuned import stored_bytes

    spec = "toyfaces-gan"
    G = load_generator(spec, device)
    (face,) = align_photo(_photo(*SIZES["1mp"]), size=G.img_resolution, face="largest")
    target = torch.from_numpy(face.image.copy()).permute(2, 0, 1).float()[None] / 127.5 - 1.0
    found = invert(G, target, steps=50 if quick else 200, seed=0)
    tuned = tune_generator(G, target[0], found.latents[0], steps=30 if quick else 100, seed=0)
    out = {"align_tuned_generator": spec, "align_tuned_parameters": sum(p.numel() for p in G.parameters())}
    with tempfile.TemporaryDirectory() as tmp:
        for storage in ("full", "float16-delta"):
            result = copy.copy(tuned)
            result.generator = copy.deepcopy(tuned.generator)
            folder = save_tuned(
                result, Path(tmp) / storage, base_spec=spec, space="z", storage=storage, base=G
            )
            again = load_generator(str(folder), device)
            with torch.no_grad():
                image = again.synthesize(found.latents[:1].to(G.device)).clamp(-1, 1).cpu()
            key = storage.replace("-", "_")
            out[f"align_tuned_bytes_per_photo_{key}"] = stored_bytes(folder)
            out[f"align_tuned_psnr_db_{key}"] = round(float(psnr_db(image, target)[0]), 3)
    out["align_untuned_psnr_db"] = round(float(found.psnr_db[0]), 3)
    out["align_float16_delta_psnr_loss_db"] = round(
        out["align_tuned_psnr_db_full"] - out["align_tuned_psnr_db_float16_delta"], 4
    )
    out["align_float16_delta_bytes_ratio"] = round(
        out["align_tuned_bytes_per_photo_float16_delta"] / out["align_tuned_bytes_per_photo_full"], 3
    )
    return out
