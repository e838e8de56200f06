"""``epipose predict``: images, folders and videos through the trained 3D network's one inference path."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import cv2
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch

from epipose import skeleton
from epipose.__main__ import main
from epipose.data.crop import crop_image
from epipose.data import frames as fr
from epipose.data.pose_tables import read_predictions
from epipose.models.pose_net import PoseNet, PoseNetConfig, save_pose_net
from epipose.models.refiner import Refiner, save_refiner
from epipose.predict import BoxSpec, PersonDetector, PredictError, PredictOptions, predict, read_boxes
from epipose.predict.boxes import default_camera, person_crop_box, root_depth_from_box
from epipose.models.inference import infer_3d
from epipose.metrics import root_relative
from epipose.models.refiner import refine_poses
from epipose.synth.motion import generate_motion, random_body

ROOT = __import__("conftest").ROOT
CROP = 64
FAST = PredictOptions(progress=False, amp="none", batch_size=4)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A tiny 3D network in train_3d's checkpoint format, and a matching and a mismatched refiner."""
    tmp = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    net = PoseNet(PoseNetConfig(backbone=18, num_joints=16, depth_bins=4, deconv_channels=8, input_size=32))
    for m in net.modules():                 # a head whose output depends on the image (not the init's ~uniform one)
        if isinstance(m, (torch.nn.ConvTranspose2d, torch.nn.Conv2d)) and m.weight.shape[-1] != 7:
            torch.nn.init.normal_(m.weight, std=(2.0 / m.weight[0].numel()) ** 0.5)
    save_pose_net(net, tmp / "pose3d.pt", meta={"depth_range_mm": 2000.0, "target": "pseudo3d", "crop_size": CROP})
    ref = Refiner(16, width=16, blocks=1, residual=True)
    ref.out_std.fill_(50.0)                 # a refiner that visibly changes poses
    save_refiner(ref, tmp / "refiner.pt")
    save_refiner(Refiner(8, width=16, blocks=1), tmp / "refiner8.pt")
    return tmp


def person(n: int = 1, seed: int = 0) -> np.ndarray:
    """(n, 16, 3) camera-frame mm: the synthetic data's walking person 4.5 m in front of the camera."""
    rng = np.random.default_rng(seed)
    world = skeleton.h36m32_to_mpii(generate_motion("Walking", 10 * n, 50.0, random_body(rng), rng)[::10])   # z up
    pelvis = world[:, skeleton.PELVIS : skeleton.PELVIS + 1]
    rel = world - pelvis
    cam = np.stack([rel[..., 0], -rel[..., 2], rel[..., 1]], axis=-1)    # x right, y down, z forward
    return cam + np.array([150.0, 80.0, 4500.0]) + np.linspace(0, 300, n)[:, None, None] * [1, 0, 0]


def draw_frame(uv: np.ndarray, width: int, height: int) -> np.ndarray:
    """BGR frame: a textured background and a stick figure with coloured joints at ``uv``."""
    yy, xx = np.mgrid[0:height, 0:width]
    img = np.stack([(xx * 0.4) % 255, (yy * 0.6) % 255, np.full_like(xx, 90)], -1).astype(np.uint8)
    for a, b in skeleton.BONES:
        cv2.line(img, tuple(int(v) for v in uv[a].round()), tuple(int(v) for v in uv[b].round()), (230, 230, 230), 4)
    for j, (u, v) in enumerate(uv):
        cv2.circle(img, (int(round(u)), int(round(v))), 4, (j * 15 % 255, 40, 255 - j * 15 % 255), -1)
    return img


def scene(width: int, height: int, n: int = 1, seed: int = 0):
    """Frames with known ground truth seen by the default camera, and their frame-shard crop squares."""
    cam = default_camera(width, height)
    gt = person(n, seed)
    uv = cam.project_camera(gt)
    boxes = fr.crop_boxes(gt[:, skeleton.PELVIS], cam, 2000.0)
    return cam, gt, [draw_frame(uv[i], width, height) for i in range(n)], boxes


def test_predict_recovers_the_evaluate_path_numbers(models, tmp_path):
    cam, gt, images, boxes = scene(320, 240)
    cv2.imwrite(str(tmp_path / "frame.png"), images[0])
    pd.DataFrame({"x0": boxes[:, 0], "y0": boxes[:, 1], "size": boxes[:, 2]}).to_csv(tmp_path / "boxes.csv", index=False)
    rc = main(["predict", str(tmp_path / "frame.png"), "--model", str(models / "pose3d.pt"), "--boxes",
               str(tmp_path / "boxes.csv"), "--out", str(tmp_path / "out"), "--no-progress", "--amp", "none"])
    assert rc == 0

    # The evaluate stage's call: infer_3d on the shard-convention crop, back-projected at the true root depth.
    from epipose.models.pose_net import load_pose3d

    net, meta = load_pose3d(models / "pose3d.pt")
    crop = crop_image(images[0][..., ::-1].copy(), *boxes[0], CROP)[None]
    ref = infer_3d(net.to(memory_format=torch.channels_last), crop, boxes, cam, gt[:, skeleton.PELVIS, 2],
                   depth_range_mm=meta["depth_range_mm"], amp="none", channels_last=True)
    table = read_predictions(tmp_path / "out" / "predictions.parquet")
    assert len(table) == 16 and set(table["subject"]) == {"frame"} and (table["frame"] == 0).all()
    assert list(table["joint"]) == list(skeleton.MPII_NAMES)
    np.testing.assert_allclose(table[["u", "v"]].to_numpy(), ref["uv"][0], rtol=1e-6, atol=1e-3)
    np.testing.assert_allclose(table[["x", "y", "z"]].to_numpy(), root_relative(ref["pose_cam"])[0], atol=1e-2)
    np.testing.assert_allclose(table["conf"].to_numpy(), ref["conf"][0], atol=1e-6)
    # The root depth from the crop size is the true one (undistorted camera): focal x 2000 / side.
    np.testing.assert_allclose(root_depth_from_box(cam.K[0, 0], boxes[:, 2], 2000.0), gt[:, skeleton.PELVIS, 2])
    assert (tmp_path / "out" / "frame.png").stat().st_size > 5000

    # The same through the Python API, with the refiner: exact arrays, refiner applied to the same poses.
    out = predict([tmp_path / "frame.png"], models / "pose3d.pt", tmp_path / "api", models / "refiner.pt",
                  BoxSpec(table=pd.read_csv(tmp_path / "boxes.csv").assign(source="", frame=0)),
                  PredictOptions(progress=False, amp="none", figures=False))
    r = out.results[0]
    np.testing.assert_array_equal(r.uv, ref["uv"])
    refined = refine_poses(_load_refiner(models / "refiner.pt"), root_relative(ref["pose_cam"]))
    np.testing.assert_allclose(r.pose, refined, atol=1e-9)
    assert np.abs(r.pose - root_relative(ref["pose_cam"])).max() > 1.0      # the refiner did something
    assert [p.name for p in out.files] == ["predictions.parquet"]


def _load_refiner(path):
    from epipose.models.refiner import load_refiner

    return load_refiner(path)[0]


def test_person_box_matches_the_training_crop_framing():
    cam, gt, _, boxes = scene(1000, 1000, n=5)
    uv = cam.project_camera(gt)
    for i in range(5):
        x0, y0, size = person_crop_box((*uv[i].min(0), *uv[i].max(0)))
        assert abs(size / boxes[i, 2] - 1) < 0.15
        assert np.hypot(x0 - boxes[i, 0], y0 - boxes[i, 1]) < 0.1 * boxes[i, 2]


def test_other_size_and_aspect_and_folder(models, tmp_path):
    _, _, big, _ = scene(320, 240)
    _, _, tall, _ = scene(180, 400, seed=3)
    folder = tmp_path / "imgs"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.jpg"), big[0])
    cv2.imwrite(str(folder / "b.png"), tall[0])
    (folder / "notes.txt").write_text("ignored")
    out = predict([folder], models / "pose3d.pt", tmp_path / "out", opts=FAST)     # whole frame = the crop
    assert sorted(out.table["subject"].unique()) == ["a", "b"] and len(out.table) == 32
    r = {res.source.subject: res for res in out.results}
    np.testing.assert_allclose(r["b"].boxes[0], [(180 - 400) / 2, 0, 400])     # square of the longer side
    # Joints in original pixels within the crop square; root-relative: pelvis at 0.
    uv = r["b"].uv[0]
    assert (uv[:, 0] > -110 - 1).all() and (uv[:, 0] < 290 + 1).all() and (uv[:, 1] > -1).all()
    assert np.abs(r["b"].pose[0, skeleton.PELVIS]).max() < 1e-6
    png = cv2.imread(str(tmp_path / "out" / "b.png"))
    assert png is not None and png.shape[:2] == (400, 800)


def test_video_rows_per_frame_and_playable_mp4(models, tmp_path):
    _, _, frames, _ = scene(160, 120, n=5)
    path = tmp_path / "clip.mp4"
    write_video(path, frames, "mp4v")
    rc = main(["predict", str(path), "--model", str(models / "pose3d.pt"), "--bbox", "30,10,130,110",
               "--smooth", "1.5", "--out", str(tmp_path / "out"), "--no-progress", "--amp", "none", "--batch-size", "2"])
    assert rc == 0
    table = read_predictions(tmp_path / "out" / "predictions.parquet")
    assert sorted(table["frame"].unique()) == [0, 1, 2, 3, 4] and len(table) == 5 * 16
    cap = cv2.VideoCapture(str(tmp_path / "out" / "clip.mp4"))
    n = 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        assert frame.shape == (400, 800, 3)
        n += 1
    assert n == 5 and int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 5
    fourcc = int(cap.get(cv2.CAP_PROP_FOURCC)).to_bytes(4, "little").decode()
    assert fourcc.lower() in ("avc1", "h264"), fourcc                  # H.264: browsers play it
    assert b"moov" in (tmp_path / "out" / "clip.mp4").read_bytes()[:4096]   # faststart: the index first
    # Smoothing: the same run without it differs, and smoothing reduces frame-to-frame change.
    raw = predict([path], models / "pose3d.pt", tmp_path / "raw", boxes=BoxSpec(bbox=(30, 10, 130, 110)),
                  opts=PredictOptions(progress=False, amp="none", figures=False)).results[0]
    smooth = table[["x", "y", "z"]].to_numpy().reshape(5, 16, 3)
    assert np.abs(np.diff(smooth, axis=0)).sum() < np.abs(np.diff(raw.pose, axis=0)).sum()


def write_video(path, frames, fourcc: str = "mp4v", fps: float = 10.0) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (frames[0].shape[1], frames[0].shape[0]))
    for f in frames:
        writer.write(f)
    writer.release()


def _error(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    return capsys.readouterr().err


def test_bad_inputs_give_clear_errors(models, tmp_path, capsys):
    _, _, images, _ = scene(160, 120)
    good = tmp_path / "good.png"
    cv2.imwrite(str(good), images[0])
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg at all")
    model, out = str(models / "pose3d.pt"), str(tmp_path / "out")

    err = _error(["predict", str(bad), "--model", model, "--out", out], capsys)
    assert "broken.jpg: not a readable image" in err
    err = _error(["predict", str(good), "--model", model, "--out", out, "--bbox", "500,500,600,700"], capsys)
    assert "good.png frame 0" in err and "outside the 160x120 image" in err
    err = _error(["predict", str(good), "--model", model, "--out", out, "--bbox", "10,10,5,50"], capsys)
    assert "--bbox '10,10,5,50': needs x1 > x0" in err
    err = _error(["predict", str(good), "--model", model, "--out", out, "--bbox", "0,0,1e30,1e30"], capsys)
    assert "good.png frame 0: the person box 0,0,1e+30,1e+30 lies mostly outside the 160x120 image (0% of it" in err
    err = _error(["predict", str(good), "--model", model, "--out", out, "--bbox=-300,-200,100,100"], capsys)
    assert "lies mostly outside the 160x120 image (8% of it inside; at least 50% needed)" in err
    cut = tmp_path / "cut.jpg"
    cv2.imwrite(str(cut), images[0])
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size * 7 // 10])   # cv2.imread would fill the rest grey
    assert cv2.imread(str(cut)) is not None
    err = _error(["predict", str(cut), "--model", model, "--out", out], capsys)
    assert "cut.jpg: truncated JPEG (no end-of-image marker)" in err
    err = _error(["predict", str(good), "--model", model, "--refiner", str(models / "refiner8.pt"), "--out", out], capsys)
    assert "refiner8.pt: the refiner is for 8 joints" in err and "predicts 16" in err
    err = _error(["predict", str(good), "--model", str(tmp_path / "missing.pt"), "--out", out], capsys)
    assert "not found" in err and "missing.pt" in err
    err = _error(["predict", str(good), "--model", str(models / "refiner.pt"), "--out", out], capsys)
    assert "refiner.pt" in err
    err = _error(["predict", str(tmp_path / "nope.png"), "--model", model, "--out", out], capsys)
    assert "input not found" in err and "nope.png" in err
    (tmp_path / "boxes.json").write_text(json.dumps([{"source": "other.png", "x0": 1, "y0": 1, "x1": 50, "y1": 90}]))
    err = _error(["predict", str(good), "--model", model, "--out", out, "--boxes", str(tmp_path / "boxes.json")], capsys)
    assert "no box for good.png" in err
    err = _error(["predict", str(good), "--model", model, "--out", out, "--detector", str(tmp_path / "det.pt")], capsys)
    assert "--detector: weights file not found" in err and "det.pt" in err
    assert not (tmp_path / "out").exists()          # nothing written on error


@pytest.mark.slow
def test_console_entry_point(models, tmp_path):
    _, _, images, _ = scene(160, 120)
    cv2.imwrite(str(tmp_path / "p.png"), images[0])
    run = subprocess.run([sys.executable, "-m", "epipose", "predict", str(tmp_path / "p.png"), "--model",
                          str(models / "pose3d.pt"), "--out", str(tmp_path / "o"), "--no-figures", "--no-progress"],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == [str(tmp_path / "o" / "predictions.parquet")]
    assert len(pd.read_parquet(tmp_path / "o" / "predictions.parquet")) == 16


def test_local_detector_file(models, tmp_path):
    from torchvision.models.detection import fasterrcnn_mobilenet_v3_large_320_fpn

    torch.manual_seed(0)
    det = fasterrcnn_mobilenet_v3_large_320_fpn(weights=None, weights_backbone=None, num_classes=91)
    torch.save(det.state_dict(), tmp_path / "det.pth")
    torch.save({"not": torch.zeros(1)}, tmp_path / "other.pth")
    _, _, images, _ = scene(160, 120)
    cv2.imwrite(str(tmp_path / "d.png"), images[0])
    rc = main(["predict", str(tmp_path / "d.png"), "--model", str(models / "pose3d.pt"), "--detector",
               str(tmp_path / "det.pth"), "--out", str(tmp_path / "out"), "--no-figures", "--no-progress"])
    assert rc == 0 and len(read_predictions(tmp_path / "out" / "predictions.parquet")) == 16
    with pytest.raises(PredictError, match="other.pth: not a torchvision Faster R-CNN"):
        PersonDetector(tmp_path / "other.pth", torch.device("cpu"))


def test_a_person_box_partly_outside_the_image_is_clipped_to_it(models, tmp_path):
    _, _, images, _ = scene(160, 120)
    img = tmp_path / "p.png"
    cv2.imwrite(str(img), images[0])
    opts = PredictOptions(progress=False, amp="none", figures=False)
    over = predict([img], models / "pose3d.pt", tmp_path / "a", boxes=BoxSpec(bbox=(60, -40, 200, 110)), opts=opts)
    clipped = predict([img], models / "pose3d.pt", tmp_path / "b", boxes=BoxSpec(bbox=(60, 0, 160, 110)), opts=opts)
    np.testing.assert_array_equal(over.results[0].boxes, clipped.results[0].boxes)
    np.testing.assert_array_equal(over.results[0].pose, clipped.results[0].pose)


def test_predict_frames_people_as_the_model_s_training_crops_were_cut(models, tmp_path):
    """The model's meta says how its crops were cut (train_3d copies the frames' crop.json): predict takes
    that kind's convention and box size; --person-fraction overrides the fraction; a model that says
    nothing is framed as the gt crops."""
    from dataclasses import replace

    from epipose.predict import CROP, BoxSpec as Spec, auto_convention

    _, _, images, _ = scene(160, 120)
    img = tmp_path / "p.png"
    cv2.imwrite(str(img), images[0])
    payload = torch.load(models / "pose3d.pt", weights_only=True)
    payload["meta"] = {**payload["meta"], "box_mm": 1800.0,
                       "crop": {"boxes": "auto", "box_mm": 1800.0, "person_fraction": 0.9, "centre_shift": -0.1}}
    torch.save(payload, tmp_path / "auto.pt")
    opts = PredictOptions(progress=False, amp="none", figures=False)
    bbox = (30.0, 10.0, 130.0, 110.0)
    cam = default_camera(160, 120)
    auto = auto_convention(0.9, -0.1, 1800.0)
    for model, fraction, convention in ((tmp_path / "auto.pt", None, auto),
                                        (tmp_path / "auto.pt", 0.5, replace(auto, person_fraction=0.5)),
                                        (models / "pose3d.pt", None, CROP)):
        out = predict([img], model, tmp_path / f"o{fraction}{model.stem}", boxes=Spec(bbox=bbox, fraction=fraction),
                      opts=opts)
        res = out.results[0]
        np.testing.assert_allclose(res.boxes[0], person_crop_box(bbox, convention))
        np.testing.assert_allclose(res.root_depth[0], cam.K[0, 0] * convention.box_mm / res.boxes[0, 2])
        meta = pq.read_schema(tmp_path / f"o{fraction}{model.stem}" / "predictions.parquet").metadata
        assert float(meta[b"person_fraction"]) == pytest.approx(convention.person_fraction)
    assert auto.person_fraction == pytest.approx(0.862 * 0.9) and auto.centre_shift == pytest.approx(-0.0326 * 0.9 + 0.1)


def test_truncated_video_tiny_image_and_out_file(models, tmp_path, capsys, caplog):
    """A video shorter than its header: predictions for the frames read, and a warning saying so; an
    image too small to hold a person and an --out that is a file: one line each, before any work."""
    _, _, frames, _ = scene(160, 120, n=10)
    path = tmp_path / "clip.avi"
    write_video(path, frames, "MJPG")
    path.write_bytes(path.read_bytes()[: path.stat().st_size * 6 // 10])      # cut: the header still says 10
    model = str(models / "pose3d.pt")
    with caplog.at_level(logging.WARNING):
        rc = main(["predict", str(path), "--model", model, "--bbox", "30,10,130,110", "--out", str(tmp_path / "out"),
                   "--no-progress", "--amp", "none", "--no-figures"])
    assert rc == 0
    n = read_predictions(tmp_path / "out" / "predictions.parquet")["frame"].nunique()
    assert 0 < n < 10 and f"clip.avi: only {n} of the 10 frames its header announces could be read" in caplog.text
    tiny = tmp_path / "tiny.png"
    cv2.imwrite(str(tiny), np.zeros((1, 1, 3), np.uint8))
    err = _error(["predict", str(tiny), "--model", model, "--out", str(tmp_path / "o2")], capsys)
    assert "tiny.png: 1x1 image is too small (at least 16 px a side)" in err and "person box" not in err
    afile = tmp_path / "afile"
    afile.write_text("x")
    good = tmp_path / "good.png"
    cv2.imwrite(str(good), frames[0])
    err = _error(["predict", str(good), "--model", model, "--out", str(afile)], capsys)
    assert f"--out {afile}: is a file, not a folder" in err and afile.read_text() == "x"
    assert not (tmp_path / "o2").exists()


def test_low_confidence_flag_keypoint_threshold_and_exports(models, tmp_path, caplog):
    """An input whose mean confidence is below --warn-conf is warned about, flagged in the figure and the
    table's metadata; --kpt-thr hides joints in the figure; CSV and JSON exports match the table, with
    the root position (the pelvis in the camera frame) the Parquet table leaves out."""
    _, _, images, _ = scene(160, 120)
    img = tmp_path / "p.png"
    cv2.imwrite(str(img), images[0])
    box = BoxSpec(bbox=(30, 10, 130, 110))
    base = dict(progress=False, amp="none")
    conf = predict([img], models / "pose3d.pt", tmp_path / "a", boxes=box,
                   opts=PredictOptions(**base, warn_conf=0.0)).results[0].conf.mean()
    with caplog.at_level(logging.WARNING):
        flagged = predict([img], models / "pose3d.pt", tmp_path / "b", boxes=box,
                          opts=PredictOptions(**base, warn_conf=min(conf + 0.01, 1.0), export=("csv", "json")))
    assert flagged.results[0].low_confidence and f"p.png: mean joint confidence {conf:.2f}" in caplog.text
    assert "unlike the training data" in caplog.text
    meta = pq.read_schema(tmp_path / "b" / "predictions.parquet").metadata
    assert json.loads(meta[b"low_confidence_inputs"]) == ["p"]
    assert (tmp_path / "a" / "p.png").read_bytes() != (tmp_path / "b" / "p.png").read_bytes()    # the title says so
    hidden = predict([img], models / "pose3d.pt", tmp_path / "c", boxes=box, opts=PredictOptions(**base, kpt_thr=1.0))
    assert (tmp_path / "c" / "p.png").read_bytes() != (tmp_path / "a" / "p.png").read_bytes()
    # exports
    res = flagged.results[0]
    csv = pd.read_csv(tmp_path / "b" / "predictions.csv")
    assert len(csv) == 16 and {"root_x", "root_y", "root_z"} <= set(csv.columns)
    np.testing.assert_allclose(csv[["x", "y", "z"]].to_numpy(), flagged.table[["x", "y", "z"]].to_numpy(), atol=1e-3)
    np.testing.assert_allclose(csv[["root_x", "root_y", "root_z"]].to_numpy()[0], res.root[0], atol=1e-3)
    assert res.root[0, 2] == pytest.approx(res.root_depth[0], rel=1e-3)        # the pelvis at the box's depth
    doc = json.loads((tmp_path / "b" / "predictions.json").read_text())
    frame = doc[0]["frames"][0]
    assert doc[0]["input"] == "p.png" and set(frame["joints"]) == set(skeleton.MPII_NAMES)
    np.testing.assert_allclose(frame["joints"]["l_wrist"]["xyz_mm"], res.pose[0, skeleton.JOINT_INDEX["l_wrist"]],
                               atol=1e-3)
    with pytest.raises(PredictError, match="--kpt-thr 2.0: must be a confidence in"):
        PredictOptions(kpt_thr=2.0)


def test_help_is_fast_and_clean():
    """``epipose predict --help`` imports neither torch nor OpenCV, and prints no "(default: None)" or "%%"."""
    code = ("import sys\nfrom epipose.__main__ import build_parser\n"
            "text = build_parser()._subparsers._group_actions[0].choices['predict'].format_help()\n"
            "print(sorted(m for m in ('torch', 'cv2') if m in sys.modules))\nprint(text)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.splitlines()[0] == "[]"
    assert "default: None" not in out and "%%" not in out and "(default: 0.25)" in out


def test_sparse_boxes_are_interpolated_over_a_video(models, tmp_path):
    """Boxes on a few frames of a video: the frames between get the linear interpolation, the frames
    outside the nearest box."""
    _, _, frames, _ = scene(160, 120, n=6)
    path = tmp_path / "clip.avi"
    write_video(path, frames, "MJPG")
    table = tmp_path / "boxes.csv"
    table.write_text("source,frame,x0,y0,x1,y1\nclip,1,20,10,120,110\nclip,3,40,10,140,110\n")
    out = predict([path], models / "pose3d.pt", tmp_path / "out", boxes=BoxSpec(table=read_boxes(table), table_path=table),
                  opts=PredictOptions(progress=False, amp="none", figures=False))
    boxes = out.results[0].boxes
    expected = [person_crop_box(b) for b in [(20, 10, 120, 110)] * 2 + [(30, 10, 130, 110)] + [(40, 10, 140, 110)] * 3]
    np.testing.assert_allclose(boxes, expected)


def test_a_refiner_trained_on_another_kind_of_prediction_is_warned_about(models, tmp_path, caplog):
    """train_refiner records whether its inputs were flip-averaged; predict says when its own
    predictions (--flip-test) are of the other kind."""
    save_refiner(_load_refiner(models / "refiner.pt"), tmp_path / "single.pt", meta={"input_flip_test": False})
    cv2.imwrite(str(tmp_path / "img.png"), np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    opts = PredictOptions(progress=False, amp="none", figures=False)
    with caplog.at_level(logging.WARNING):
        predict([tmp_path / "img.png"], models / "pose3d.pt", tmp_path / "a", tmp_path / "single.pt", opts=opts)
    assert "trained on single-view predictions, these are flip-averaged" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        predict([tmp_path / "img.png"], models / "pose3d.pt", tmp_path / "b", models / "refiner.pt", opts=opts)
    assert "trained on" not in caplog.text                  # a refiner that does not say: nothing to compare
