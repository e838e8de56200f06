import cv2
import numpy as np
import pytest
import torch

from epipose import skeleton
from epipose.data.transforms import (AugmentParams, apply_to_points, augment_batch, center_batch, crop_transforms,
                                     decode_crops, flip_joints, load_voc_occluders, person_boxes, to_crop, warp_batch)


def _dots(points, size):
    """Images (B, 3, size, size) with a 3×3 white square at each (x, y)."""
    img = torch.zeros(len(points), 3, size, size)
    for b, (x, y) in enumerate(points):
        img[b, :, y - 1 : y + 2, x - 1 : x + 2] = 255.0
    return img


def _centroid(img):
    w = img[0] / img[0].sum()
    yy, xx = torch.meshgrid(torch.arange(img.shape[-2], dtype=torch.float32),
                            torch.arange(img.shape[-1], dtype=torch.float32), indexing="ij")
    return torch.stack([(w * xx).sum(), (w * yy).sum()])


def test_warp_and_point_map_agree():
    pts = [(30, 40), (50, 50), (45, 60), (55, 35)]
    img = _dots(pts, 100)
    M = crop_transforms(100, 60.0, 64, torch.tensor([1.0, 1.2, 0.8, 1.1]), torch.tensor([0.0, 30.0, -45.0, 90.0]),
                        torch.tensor([[0, 0], [0.1, 0], [0, -0.1], [0.05, 0.05]]),
                        torch.tensor([False, True, False, True]))
    out = warp_batch(img, M, 64)
    mapped = apply_to_points(M, torch.tensor(pts, dtype=torch.float32)[:, None])
    for b in range(4):
        assert _centroid(out[b]).tolist() == pytest.approx(mapped[b, 0].tolist(), abs=0.15)


def test_center_view_is_the_box_resized():
    img = _dots([(50, 30)], 100)
    out, M = center_batch(img, src_box=50.0, out_size=32)          # the central 50 px → 32 px
    expected = (np.array([50.0, 30.0]) - 25.0) * 32 / 50
    assert _centroid(out[0]).tolist() == pytest.approx(expected.tolist(), abs=0.15)
    flipped, _ = center_batch(img, 50.0, 32, flip=True)
    assert _centroid(flipped[0])[0].item() == pytest.approx(31 - expected[0], abs=0.15)


def test_flip_swaps_left_and_right():
    joints = torch.arange(16 * 2, dtype=torch.float32).reshape(1, 16, 2).repeat(2, 1, 1)
    out = flip_joints(joints, torch.tensor([True, False]))
    assert torch.equal(out[1], joints[1])
    for a, b in skeleton.FLIP_PAIRS:
        assert torch.equal(out[0, a], joints[0, b]) and torch.equal(out[0, b], joints[0, a])
    assert torch.equal(out[0, skeleton.PELVIS], joints[0, skeleton.PELVIS])


def test_augmented_joints_follow_the_image():
    # A dot at each sample's r_wrist; after augmentation (incl. flips) the dot is where the label says,
    # in the r_wrist slot when not flipped and in the l_wrist slot when flipped.
    g = torch.Generator().manual_seed(0)
    n, size = 12, 96
    joints = torch.full((n, 16, 2), 48.0)
    wrist = torch.randint(30, 66, (n, 2), generator=g).float()
    joints[:, 10] = wrist
    img = _dots([tuple(int(v) for v in w) for w in wrist], size)
    aug = AugmentParams(occlusion_prob=0.0, color=0.0)
    out, pts, vis = augment_batch(img.to(torch.uint8), joints, torch.ones(n, 16, dtype=torch.bool), 60.0, 64, aug, g)
    assert out.shape == (n, 3, 64, 64) and pts.shape == (n, 16, 2)
    flipped = 0
    for b in range(n):
        # Every joint but r_wrist sat at (48, 48): the wrist's label is the one of slots 10/15 that moved
        # differently from the pelvis. Not flipped: slot 10; flipped: slot 15.
        slot = 15 if torch.allclose(pts[b, 10], pts[b, skeleton.PELVIS]) else 10
        assert torch.allclose(pts[b, 25 - slot], pts[b, skeleton.PELVIS])
        flipped += slot == 15
        if vis[b, slot]:
            assert _centroid(out[b]).tolist() == pytest.approx(pts[b, slot].tolist(), abs=0.6)
    assert 0 < flipped < n


def test_augmentation_is_a_function_of_the_seed():
    img = torch.randint(0, 255, (4, 3, 80, 80), dtype=torch.uint8)
    joints = torch.rand(4, 16, 2) * 80
    vis = torch.ones(4, 16, dtype=torch.bool)
    a = augment_batch(img, joints, vis, 56.0, 64, AugmentParams(), torch.Generator().manual_seed(5))
    b = augment_batch(img, joints, vis, 56.0, 64, AugmentParams(), torch.Generator().manual_seed(5))
    c = augment_batch(img, joints, vis, 56.0, 64, AugmentParams(), torch.Generator().manual_seed(6))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[0], c[0])
    assert a[0].min() >= 0 and a[0].max() <= 255


def test_random_patch_occlusion_covers_part_of_the_image():
    img = torch.full((16, 3, 64, 64), 128, dtype=torch.uint8)
    aug = AugmentParams(scale=0, rotation=0, translate=0, flip=False, color=0, occlusion_prob=1.0, occlusion_size=0.5)
    out, _, _ = augment_batch(img, torch.full((16, 16, 2), 32.0), torch.ones(16, 16, dtype=torch.bool), 64.0, 64, aug,
                              torch.Generator().manual_seed(0))
    changed = ((out - 128).abs() > 1).float().mean(dim=(1, 2, 3))
    assert (changed > 0.002).all() and (changed < 0.5).all()


def test_decode_crops_maps_points_with_jpeg_reduction(tmp_path):
    img = np.full((800, 1000, 3), 30, np.uint8)
    cv2.circle(img, (612, 388), 12, (255, 255, 255), -1)
    cv2.imwrite(str(tmp_path / "a.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, 98])
    boxes = person_boxes(np.array([[600.0, 400.0], [500.0, 420.0]]), np.array([2.0, 1.5]), 1.25)
    crops = decode_crops([tmp_path / "a.jpg"] * 2, boxes, 64)     # 500 px boxes at 64 px: 1/4 JPEG decode
    assert crops.shape == (2, 64, 64, 3)
    expected = to_crop(np.array([[[612.0, 388.0]]] * 2), boxes, 64)[:, 0]
    for crop, e in zip(crops, expected):
        w = crop[..., 0].astype(float) - 30
        w = np.clip(w, 0, None) / np.clip(w, 0, None).sum()
        yy, xx = np.mgrid[:64, :64]
        assert [(w * xx).sum(), (w * yy).sum()] == pytest.approx(e.tolist(), abs=0.5)
    with pytest.raises(FileNotFoundError, match="b.jpg"):
        decode_crops([tmp_path / "b.jpg"], boxes[:1], 64)
    (tmp_path / "c.jpg").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="c.jpg"):
        decode_crops([tmp_path / "c.jpg"], boxes[:1], 64)


def _write_palette_png(path, array):
    from PIL import Image

    im = Image.fromarray(array.astype(np.uint8), mode="P")
    im.putpalette([v for i in range(256) for v in (i, (i * 7) % 256, (i * 13) % 256)])
    im.save(path)


def test_voc_occluders(tmp_path):
    voc = tmp_path / "VOC2012"
    for d in ("SegmentationObject", "SegmentationClass", "JPEGImages"):
        (voc / d).mkdir(parents=True)
    image = np.zeros((120, 160, 3), np.uint8)
    image[10:60, 10:90] = (0, 0, 255)                  # object 1: a red car-like block (class 7)
    image[70:110, 100:150] = (0, 255, 0)               # object 2: a person (class 15) — must be skipped
    objects = np.zeros((120, 160)); classes = np.zeros((120, 160))
    objects[10:60, 10:90], classes[10:60, 10:90] = 1, 7
    objects[70:110, 100:150], classes[70:110, 100:150] = 2, 15
    cv2.imwrite(str(voc / "JPEGImages" / "2007_000001.jpg"), image)
    _write_palette_png(voc / "SegmentationObject" / "2007_000001.png", objects)
    _write_palette_png(voc / "SegmentationClass" / "2007_000001.png", classes)
    bank = load_voc_occluders(voc, size=32)
    assert bank.shape == (1, 4, 32, 32)
    alpha, rgb = bank[0, 3] > 0, bank[0, :3]
    assert alpha.float().mean() == pytest.approx(50 / 80, abs=0.1)      # the block's aspect kept
    assert rgb[0][alpha].float().mean() > 200 and rgb[1][alpha].float().mean() < 50     # red (RGB)
    img = torch.full((8, 3, 64, 64), 128, dtype=torch.uint8)
    aug = AugmentParams(scale=0, rotation=0, translate=0, flip=False, color=0, occlusion_prob=1.0, occlusion_size=0.6)
    out, _, _ = augment_batch(img, torch.full((8, 16, 2), 32.0), torch.ones(8, 16, dtype=torch.bool), 64.0, 64, aug,
                              torch.Generator().manual_seed(1), occluders=bank)
    red = (out[:, 0] > 180) & (out[:, 1] < 90)
    assert red.flatten(1).any(dim=1).all()
    with pytest.raises(FileNotFoundError, match="augment.voc_root"):
        load_voc_occluders(tmp_path / "nowhere")
