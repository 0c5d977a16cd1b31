"""CIFAR-10-C-style corruptions (stridelab.metrics.corruption): shapes, severity order, seeding, hand
cases with known answers, comparisons with scipy / numpy / Pillow transcriptions of the reference, and
corruption_accuracy with a counter-case."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn as nn

from stridelab.errors import ConfigError
from stridelab.metrics import corruption
from stridelab.metrics.corruption import (
    CORRUPTIONS,
    NOISES,
    SEVERITY_CONSTANTS,
    corrupt,
    disk_kernel,
)
from stridelab.metrics.robustness import corruption_accuracy

NAMES = list(CORRUPTIONS)


def random_images(n: int = 4, size: tuple[int, int] = (32, 32), seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, *size), generator=gen, dtype=torch.uint8)


def constant_images(values, size: int = 32) -> torch.Tensor:
    v = torch.as_tensor(values, dtype=torch.uint8)
    return v.view(-1, 1, 1, 1).expand(-1, 3, size, size).contiguous()


def distance(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().mean())


def test_constants_are_the_cifar_ones():
    # Spot checks against make_cifar_c.py (the ImageNet-C script has other values, e.g. noise 0.08..0.38).
    assert SEVERITY_CONSTANTS["gaussian_noise"] == (0.04, 0.06, 0.08, 0.09, 0.10)
    assert SEVERITY_CONSTANTS["shot_noise"] == (500, 250, 100, 75, 50)
    assert SEVERITY_CONSTANTS["jpeg_compression"] == (80, 65, 58, 50, 40)
    assert set(SEVERITY_CONSTANTS) == set(CORRUPTIONS)
    assert all(len(c) == 5 for c in SEVERITY_CONSTANTS.values())


@pytest.mark.parametrize("name", NAMES)
def test_shape_dtype_and_change(name):
    images = random_images()
    for severity in range(1, 6):
        out = corrupt(images, name, severity)
        assert out.dtype == torch.uint8 and out.shape == images.shape
        if severity in (1, 5):
            assert not torch.equal(out, images), (name, severity)
    odd = random_images(2, size=(20, 28))  # any size, not only 32x32
    assert corrupt(odd, name, 5).shape == odd.shape


@pytest.mark.parametrize("name", [n for n in NAMES if n != "saturate"])
def test_severity_moves_farther_from_clean(name):
    # saturate's constants (S x0.3, x0.1, x1.5, x2+0.1, x2.5+0.2) are not ordered by distance. pixelate is
    # ordered on detailed images like these; on smooth ones severities 3 and 4 (27 and 24 pixels) can swap.
    images = random_images(4)
    d = [distance(corrupt(images, name, s), images) for s in range(1, 6)]
    assert all(a < b for a, b in zip(d, d[1:])), d


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_images(name):
    images = random_images(3)
    assert torch.equal(corrupt(images, name, 3, seed=7), corrupt(images, name, 3, seed=7))
    differs = not torch.equal(corrupt(images, name, 3, seed=7), corrupt(images, name, 3, seed=8))
    assert differs == (name in NOISES)


def test_severities_draw_different_noise():
    images = constant_images([128] * 2)
    a = corrupt(images, "gaussian_noise", 4).double() - 128
    b = corrupt(images, "gaussian_noise", 5).double() - 128
    assert abs(float(torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1])) < 0.1


def test_chunked_sets_match(monkeypatch):
    images = random_images(5)
    whole = {name: corrupt(images, name, 2) for name in ("contrast", "pixelate", "gaussian_noise")}
    monkeypatch.setattr(corruption, "CHUNK", 2)
    assert torch.equal(corrupt(images, "contrast", 2), whole["contrast"])
    assert torch.equal(corrupt(images, "pixelate", 2), whole["pixelate"])
    chunked = corrupt(images, "gaussian_noise", 2)
    assert torch.equal(chunked, corrupt(images, "gaussian_noise", 2))  # still seeded
    assert chunked.shape == images.shape


def test_invalid_choices_raise_config_error():
    images = random_images(1)
    with pytest.raises(ConfigError, match="gaussian_noise.*jpeg_compression"):
        corrupt(images, "fog", 1)
    for bad in (0, 6, 2.0, True, "3"):
        with pytest.raises(ConfigError, match="1, 2, 3, 4, 5"):
            corrupt(images, "contrast", bad)
    with pytest.raises(ConfigError):
        CORRUPTIONS["contrast"](images, 6, torch.Generator())
    assert torch.equal(corrupt(images, "contrast", np.int64(2)), corrupt(images, "contrast", 2))
    with pytest.raises(ValueError, match="uint8"):
        corrupt(images.float(), "contrast", 1)


# ------------------------------------------------------------------------------------------ hand cases


@pytest.mark.parametrize("severity", range(1, 6))
def test_brightness_of_grey_is_v_plus_c(severity):
    c = SEVERITY_CONSTANTS["brightness"][severity - 1]
    values = [0, 37, 128, 200, 250, 255]
    out = corrupt(constant_images(values, 8), "brightness", severity)
    for v, img in zip(values, out):
        assert torch.all(img == int(min(v / 255 + c, 1.0) * 255)), (v, severity)


def test_brightness_scales_each_pixel_by_new_v_over_v():
    # In exact arithmetic hsv2rgb(h, s, V') = x V' / V: the round trip only adds float rounding.
    images = random_images(4)
    c = SEVERITY_CONSTANTS["brightness"][2]
    x = images.double() / 255
    v = x.amax(1, keepdim=True)
    expected = torch.where(v > 0, x * (v + c).clamp(max=1) / v.clamp(min=1e-12), torch.full_like(x, c))
    got = corrupt(images, "brightness", 3).double() / 255
    assert float((got - expected).abs().max()) <= 1 / 255 + 1e-9


def numpy_contrast(images: torch.Tensor, c: float) -> torch.Tensor:
    """make_cifar_c.py's contrast on HWC numpy arrays, image by image."""
    out = []
    for img in images.permute(0, 2, 3, 1).contiguous().numpy():  # HWC in memory, as np.array(PIL image)
        x = np.array(img) / 255.0
        means = np.mean(x, axis=(0, 1), keepdims=True)
        out.append(np.uint8(np.clip((x - means) * c + means, 0, 1) * 255))
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2)


def test_contrast_of_constant_is_the_image_up_to_truncation():
    values = list(range(256))
    images = constant_images(values, 8)
    for severity in (1, 5):
        out = corrupt(images, "contrast", severity)
        # (x - m) c + m with m = x up to float rounding: truncation to uint8 can lose 1 where the
        # float is a hair below the integer; the reference does the same (next test).
        d = out.int() - images.int()
        assert int(d.min()) >= -1 and int(d.max()) == 0
        assert torch.equal(out[[0, 255]], images[[0, 255]])


@pytest.mark.parametrize("severity", [1, 3, 5])
def test_contrast_matches_numpy_reference_bit_exactly(severity):
    images = torch.cat([random_images(3), constant_images([1, 2, 128, 254])])
    c = SEVERITY_CONSTANTS["contrast"][severity - 1]
    assert torch.equal(corrupt(images, "contrast", severity), numpy_contrast(images, c))


def test_gaussian_blur_of_constant_is_the_constant():
    values = list(range(256))
    images = constant_images(values, 12)
    for severity in range(1, 6):
        d = corrupt(images, "gaussian_blur", severity).int() - images.int()
        assert int(d.min()) >= -1 and int(d.max()) == 0  # kernel sums to 1 up to rounding, then truncation


@pytest.mark.parametrize("severity", range(1, 6))
def test_gaussian_blur_matches_scipy(severity):
    ndimage = pytest.importorskip("scipy.ndimage")
    sigma = SEVERITY_CONSTANTS["gaussian_blur"][severity - 1]
    images = random_images(3)
    hwc = images.permute(0, 2, 3, 1).numpy() / 255.0
    ref = np.stack([ndimage.gaussian_filter(x, sigma=(sigma, sigma, 0), mode="nearest", truncate=4.0) for x in hwc])
    ref = torch.from_numpy(np.uint8(np.clip(ref, 0, 1) * 255)).permute(0, 3, 1, 2)
    d = (corrupt(images, "gaussian_blur", severity).int() - ref.int()).abs()
    assert int(d.max()) <= 1
    assert float((d > 0).double().mean()) < 1e-3  # same kernel and summation order: in practice equal


def test_disk_kernel_small_radius_is_a_3x3_gaussian():
    # radius < 1 keeps only the centre of the disk; the antialiasing blur makes it cv2's 3x3 gaussian.
    for radius, sigma in SEVERITY_CONSTANTS["defocus_blur"][:3]:
        w = torch.tensor([math.exp(-1 / (2 * sigma**2)), 1.0, math.exp(-1 / (2 * sigma**2))])
        w = w / w.sum()
        kernel = disk_kernel(radius, sigma)
        assert kernel.shape == (3, 3)
        assert torch.allclose(kernel, torch.outer(w, w).double(), atol=1e-7)
    for radius, sigma in SEVERITY_CONSTANTS["defocus_blur"]:
        kernel = disk_kernel(radius, sigma)
        assert abs(float(kernel.sum()) - 1) < 1e-6
        assert torch.equal(kernel, kernel.flip(0)) and torch.equal(kernel, kernel.T)
    # radius 1: the 5-pixel cross, blurred: its arms weigh more than its diagonals
    k = disk_kernel(1.0, 0.2)
    assert k.shape == (5, 5) and k[2, 1] > 10 * k[1, 1] > 0


def test_defocus_blur_of_a_point_is_the_kernel_and_of_a_constant_the_constant():
    point = torch.zeros(1, 3, 15, 15, dtype=torch.uint8)
    point[..., 7, 7] = 255
    for severity in range(1, 6):
        kernel = disk_kernel(*SEVERITY_CONSTANTS["defocus_blur"][severity - 1])
        r = (kernel.shape[0] - 1) // 2
        out = corrupt(point, "defocus_blur", severity)[0, 0]
        expected = (kernel * 255).clamp(0, 255)
        assert float((out[7 - r : 8 + r, 7 - r : 8 + r].double() - expected).abs().max()) < 1
        assert out.sum() == out[7 - r : 8 + r, 7 - r : 8 + r].sum()
        images = constant_images([0, 77, 255], 10)
        assert torch.equal(corrupt(images, "defocus_blur", severity), images)


def test_pixelate_keeps_block_constant_images():
    gen = torch.Generator().manual_seed(3)
    blocks4 = torch.randint(0, 256, (2, 3, 8, 8), generator=gen, dtype=torch.uint8)
    blocks4 = blocks4.repeat_interleave(4, 2).repeat_interleave(4, 3)  # 32 -> 24 keeps 4x4 blocks
    blocks8 = blocks4[:, :, ::8, ::8].repeat_interleave(8, 2).repeat_interleave(8, 3)  # 32 -> 20 keeps 8x8
    assert torch.equal(corrupt(blocks4, "pixelate", 4), blocks4)
    assert torch.equal(corrupt(blocks8, "pixelate", 5), blocks8)
    assert torch.equal(corrupt(blocks8, "pixelate", 4), blocks8)
    flat = constant_images([0, 90, 255])
    for severity in range(1, 6):
        assert torch.equal(corrupt(flat, "pixelate", severity), flat)


@pytest.mark.parametrize("severity", range(1, 6))
def test_pixelate_matches_pillow_box_bit_exactly(severity):
    image_mod = pytest.importorskip("PIL.Image")
    c = SEVERITY_CONSTANTS["pixelate"][severity - 1]
    for img in [*random_images(2).split(1), random_images(1, size=(24, 40), seed=1)]:
        h, w = img.shape[-2:]
        pil = image_mod.fromarray(img[0].permute(1, 2, 0).contiguous().numpy())
        pil = pil.resize((int(w * c), int(h * c)), image_mod.BOX).resize((w, h), image_mod.BOX)
        ref = torch.from_numpy(np.array(pil)).permute(2, 0, 1)
        assert torch.equal(corrupt(img, "pixelate", severity)[0], ref)


def test_jpeg_of_constant_is_close():
    images = constant_images([0, 60, 128, 255], 16)
    for severity in range(1, 6):
        assert int((corrupt(images, "jpeg_compression", severity).int() - images.int()).abs().max()) <= 2


@pytest.mark.parametrize("severity", [1, 5])
def test_jpeg_matches_pillow(severity):
    image_mod = pytest.importorskip("PIL.Image")
    import io

    quality = SEVERITY_CONSTANTS["jpeg_compression"][severity - 1]
    images = random_images(2)
    smooth = torch.nn.functional.interpolate(images.float(), scale_factor=0.25, mode="area")
    images = torch.cat([images, torch.nn.functional.interpolate(smooth, size=32, mode="bilinear").to(torch.uint8)])
    out = corrupt(images, "jpeg_compression", severity)
    for img, got in zip(images, out):
        buf = io.BytesIO()
        image_mod.fromarray(img.permute(1, 2, 0).contiguous().numpy()).save(buf, "JPEG", quality=quality)
        ref = torch.from_numpy(np.array(image_mod.open(buf))).permute(2, 0, 1)
        # Same libjpeg settings; decoders of other libjpeg-turbo builds may differ by a level or two.
        d = (got.int() - ref.int()).abs()
        assert int(d.max()) <= 2 and float((d > 0).double().mean()) < 0.01


# --------------------------------------------------------------------------------------- noise statistics

GREY = 128  # mid-grey: no clipping at these noise levels, and never equal to salt (255) or pepper (0)


def grey_residual(name: str, severity: int) -> torch.Tensor:
    images = constant_images([GREY] * 8, 64)
    return (corrupt(images, name, severity).double() - GREY) / 255


# Truncation to uint8 adds a uniform error on (-1/255, 0]: variance 1 / (12 * 255^2).
QUANT_VAR = 1 / (12 * 255**2)


@pytest.mark.parametrize("severity", range(1, 6))
def test_gaussian_noise_std_is_c(severity):
    c = SEVERITY_CONSTANTS["gaussian_noise"][severity - 1]
    r = grey_residual("gaussian_noise", severity)
    assert float(r.std()) == pytest.approx(math.sqrt(c**2 + QUANT_VAR), rel=0.02)
    assert float(r.mean()) == pytest.approx(-0.5 / 255, abs=4 * c / math.sqrt(r.numel()) + 1e-4)


@pytest.mark.parametrize("severity", range(1, 6))
def test_shot_noise_std_is_sqrt_x_over_c(severity):
    c = SEVERITY_CONSTANTS["shot_noise"][severity - 1]
    r = grey_residual("shot_noise", severity)
    assert float(r.std()) == pytest.approx(math.sqrt(GREY / 255 / c + QUANT_VAR), rel=0.03)


@pytest.mark.parametrize("severity", range(1, 6))
def test_speckle_noise_std_is_x_times_c(severity):
    c = SEVERITY_CONSTANTS["speckle_noise"][severity - 1]
    r = grey_residual("speckle_noise", severity)
    assert float(r.std()) == pytest.approx(math.sqrt((GREY / 255 * c) ** 2 + QUANT_VAR), rel=0.02)


@pytest.mark.parametrize("severity", range(1, 6))
def test_impulse_noise_flips_about_amount(severity):
    amount = SEVERITY_CONSTANTS["impulse_noise"][severity - 1]
    images = constant_images([GREY] * 8, 64)
    out = corrupt(images, "impulse_noise", severity)
    changed = out != GREY
    n = changed.numel()
    assert float(changed.double().mean()) == pytest.approx(amount, abs=5 * math.sqrt(amount / n))
    assert torch.all((out == GREY) | (out == 0) | (out == 255))
    flipped = int(changed.sum())
    salt = int((out == 255).sum())
    assert abs(salt - flipped / 2) < 5 * math.sqrt(flipped / 4)
    # flips are per value, not per pixel: a flipped pixel usually keeps its other channels
    per_pixel = changed.sum(1)
    assert int((per_pixel == 1).sum()) > 5 * int((per_pixel == 3).sum())


# --------------------------------------------------------------------------------- corruption_accuracy


def to_inputs(images: torch.Tensor) -> torch.Tensor:
    return images.float() / 255 - 0.5


def test_corruption_accuracy_keys_and_range():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10))
    images = random_images(8)
    labels = torch.randint(0, 10, (8,), generator=torch.Generator().manual_seed(1))
    out = corruption_accuracy(model, images, labels, to_inputs, batch_size=3)
    expected = {f"corruption/{n}_s{k}" for n in NAMES for k in range(1, 6)}
    expected |= {f"corruption/{n}" for n in NAMES}
    expected |= {"corruption/mean_acc", "corruption/clean_acc", "corruption/relative_drop"}
    assert set(out) == expected
    assert all(0 <= v <= 1 for k, v in out.items() if k != "corruption/relative_drop")
    assert out["corruption/relative_drop"] == pytest.approx(out["corruption/clean_acc"] - out["corruption/mean_acc"])
    mean_c = sum(out[f"corruption/contrast_s{k}"] for k in range(1, 6)) / 5
    assert out["corruption/contrast"] == pytest.approx(mean_c)
    assert out["corruption/mean_acc"] == pytest.approx(sum(out[f"corruption/{n}"] for n in NAMES) / len(NAMES))


def always_class_zero() -> nn.Module:
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10))
    with torch.no_grad():
        model[1].weight.zero_()
        model[1].bias.copy_(torch.arange(10, 0, -1, dtype=torch.float32))
    return model


def test_corruption_accuracy_perfect_model_and_counter_case():
    images = random_images(6)
    out = corruption_accuracy(always_class_zero(), images, torch.zeros(6, dtype=torch.long), to_inputs)
    assert all(v == 1.0 for k, v in out.items() if k != "corruption/relative_drop")
    assert out["corruption/relative_drop"] == 0.0
    labels = torch.tensor([0, 3, 0, 7, 1, 0])  # the counter-case: the same model, other labels
    names = ["gaussian_noise", "pixelate"]
    out = corruption_accuracy(always_class_zero(), images, labels, to_inputs, names=names, severities=(1, 5))
    assert set(out) >= {"corruption/gaussian_noise_s1", "corruption/pixelate_s5"}
    assert "corruption/pixelate_s3" not in out
    assert out["corruption/clean_acc"] == out["corruption/mean_acc"] == pytest.approx(0.5)


def test_corruption_accuracy_rejects_bad_choices():
    images, labels = random_images(2), torch.zeros(2, dtype=torch.long)
    with pytest.raises(ConfigError, match="not corruptions stridelab generates"):
        corruption_accuracy(always_class_zero(), images, labels, to_inputs, names=["snow"])
    with pytest.raises(ConfigError, match="severit"):
        corruption_accuracy(always_class_zero(), images, labels, to_inputs, severities=(0, 1))
