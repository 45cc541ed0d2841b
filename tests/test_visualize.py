"""Skeleton videos (magnet.visualize.render) and the shared output-file helpers (magnet.motion_files)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import imageio_ffmpeg
import numpy as np
import pytest
import yaml
from motion_outputs import make_outputs, write_foreign_npz
from PIL import Image

from magnet.body import default_body_model
from magnet.errors import BodyModelError, ConfigError, DataError
from magnet.evaluation.io import load_output_npz
from magnet.motion_files import clip_joints, output_files, row_frames, run_body_model, run_fps, select_rows
from magnet.visualize.render import (
    CONTEXT_TINT,
    PERSON_COLOURS,
    SkeletonRenderer,
    fit_camera,
    gif_durations,
    main,
    render_clip,
    render_outputs,
    render_panels,
)

REPO = Path(__file__).resolve().parents[1]
CONTEXT = 16
FRAMES = 48


@pytest.fixture(scope="module")
def outputs(synthetic_root, tmp_path_factory):
    """A run directory: a 1-person and a 2-person clip, 48 frames, context 16, ground truth + 2 samples."""
    out = tmp_path_factory.mktemp("outputs")
    make_outputs(synthetic_root, out, frames=FRAMES, samples=2, context=CONTEXT)
    return out


def _two_person(outputs: Path) -> Path:
    return next(p for p in output_files(outputs) if load_output_npz(p).num_persons == 2)


def _mp4_frames(path: Path) -> tuple[list[np.ndarray], dict]:
    gen = imageio_ffmpeg.read_frames(str(path))
    meta = next(gen)
    w, h = meta["size"]
    return [np.frombuffer(f, np.uint8).reshape(h, w, 3) for f in gen], meta


def _near(image: np.ndarray, colour, tol: int = 40) -> np.ndarray:
    return (np.abs(image.astype(int) - np.asarray(colour)).max(axis=-1) <= tol)


def _tint_rgb() -> np.ndarray:
    return np.array([int(CONTEXT_TINT[i:i + 2], 16) for i in (1, 3, 5)])


# ------------------------------------------------------------------------------------------------ motion files
def test_output_files_and_row_selection(outputs, tmp_path):
    files = output_files(outputs)
    assert [f.name for f in files] == sorted(f.name for f in outputs.glob("*.npz"))
    (outputs / "plan.npz").write_bytes(b"")  # sample.py plan_only=true output: skipped
    try:
        assert output_files(outputs) == files
    finally:
        (outputs / "plan.npz").unlink()
    clip = load_output_npz(files[0])
    assert select_rows(clip) == [0, 1, 2] and select_rows(clip, 1) == [0, 1]
    assert select_rows(clip, [2], ground_truth=False) == [2]
    with pytest.raises(ConfigError, match="holds 2 sample"):
        select_rows(clip, 3)
    with pytest.raises(ConfigError, match="sample 5 is out of range"):
        select_rows(clip, [5])
    assert row_frames(clip, 0) == FRAMES and row_frames(clip, 1) == FRAMES
    with pytest.raises(DataError, match="not found"):
        output_files(tmp_path / "missing")
    with pytest.raises(DataError, match="no output"):
        output_files(tmp_path)
    # fps from inf_cfg.yaml (make_example writes 30), the default skeleton without smpl_path
    assert run_fps(outputs) == 30.0
    assert run_body_model(files[0]).is_default


def test_clip_joints_are_forward_kinematics(outputs):
    clip = load_output_npz(_two_person(outputs))
    joints = clip_joints(clip, default_body_model(), [0, 2], frames=10)
    assert joints.shape == (2, 10, 2, 22, 3) and joints.dtype == np.float32
    # the pelvis is the root translation; everyone stands on the floor (feet near y = 0, heads above 1.2 m)
    np.testing.assert_allclose(joints[:, :, :, 0], clip.T_world_root[[0, 2], :10, :, 4:], atol=1e-6)
    assert float(joints[..., 15, 1].min()) > 1.2 and abs(float(joints[..., [10, 11], 1].min())) < 0.1


# ------------------------------------------------------------------------------------------------ camera
def test_camera_keeps_everyone_in_view_and_faces_the_spread():
    T = 30
    # two persons walking apart along x (from 1 m to 8 m apart): a vertical stick each
    joints = np.zeros((T, 2, 22, 3))
    joints[..., 1] = np.linspace(0.0, 1.7, 22)
    sep = np.linspace(0.5, 4.0, T)
    joints[:, 0, :, 0] = -sep[:, None]
    joints[:, 1, :, 0] = sep[:, None]
    r = SkeletonRenderer([joints, joints + [0.0, 0.0, 0.5]], titles=["a", "b"])
    xy, depth = r.camera.project(np.stack([joints, joints + [0.0, 0.0, 0.5]]))
    (x0, x1), (y0, y1) = r.view_limits
    assert (depth > 0).all()
    assert xy[..., 0].min() >= x0 and xy[..., 0].max() <= x1 and xy[..., 1].min() >= y0 and xy[..., 1].max() <= y1
    # the spread is along x: the camera looks along -z (from the +z side), so left/right = world x
    cam = fit_camera(joints)
    assert cam.forward[2] < -0.9 and abs(cam.forward[0]) < 1e-9 and cam.forward[1] < 0
    assert cam.right[0] > 0.99
    # every frame of both panels is drawn with the person colours present
    frame = r.frame(T - 1)
    w = r.size[0] // 2
    for panel in (frame[:, :w], frame[:, w:]):
        for colour in PERSON_COLOURS[:2]:
            assert _near(panel, colour, 10).sum() > 50


def test_frames_mark_context_and_end_of_valid_frames():
    T = 20
    joints = np.zeros((T, 1, 22, 3))
    joints[..., 1] = np.linspace(0.0, 1.7, 22)
    joints[..., 0] = np.linspace(0.0, 1.0, T)[:, None, None]
    r = SkeletonRenderer([joints, joints], titles=["ground truth", "sample 1"], context_frames=5,
                         valid_frames=[T, 12], generated=[False, True], panel_px=256)
    assert r.size == (512, r.height) and r.height % 16 == 0
    w = r.size[0] // 2
    body = slice(28, r.height - 20)  # below the titles, above the footer
    tint = _tint_rgb()
    ctx, after, ended = r.frame(2), r.frame(8), r.frame(15)
    # context frames: the panel background is the amber tint; afterwards white
    assert np.median(ctx[body, :w].reshape(-1, 3), axis=0).tolist() == tint.tolist()
    assert np.median(after[body, :w].reshape(-1, 3), axis=0).tolist() == [255, 255, 255]
    # after its 12 valid frames the sample panel is empty, the ground truth still drawn
    blue = PERSON_COLOURS[0]
    assert _near(ended[body, :w], blue, 10).sum() > 50 and _near(ended[body, w:], blue, 10).sum() == 0
    # frames after a panel's valid length (padding) do not move the camera or the view
    padded = joints.copy()
    padded[12:] = 1000.0
    fitted = SkeletonRenderer([joints, padded], valid_frames=[T, 12], panel_px=256)
    assert fitted.view_limits == r.view_limits and np.allclose(fitted.camera.position, r.camera.position)
    with pytest.raises(DataError, match="same frames and persons"):
        SkeletonRenderer([joints, joints[:5]])
    with pytest.raises(DataError, match="NaN"):
        SkeletonRenderer([np.full_like(joints, np.nan)])


# ------------------------------------------------------------------------------------------------ files
def test_render_clip_mp4_has_expected_frames(outputs, tmp_path):
    npz = _two_person(outputs)
    video = render_clip(npz, tmp_path / "v.mp4", samples=2)
    frames, meta = _mp4_frames(video)
    assert len(frames) == FRAMES and meta["fps"] == 30.0 and meta["codec"] == "h264"
    w, h = meta["size"]
    assert w == 3 * 384 and h % 16 == 0  # ground truth + 2 samples side by side
    assert imageio_ffmpeg.count_frames_and_secs(str(video))[0] == FRAMES
    # the first frames are context (tinted), later ones not (H.264 is lossy: compare loosely)
    body = frames[0][40:h - 30, :w // 3]
    assert np.abs(np.median(body.reshape(-1, 3), axis=0) - _tint_rgb()).max() <= 6
    late = frames[CONTEXT + 5][40:h - 30, :w // 3]
    assert np.median(late.reshape(-1, 3), axis=0).min() >= 248
    assert not list(tmp_path.glob("*.tmp-*"))


def test_render_gif_frame_count_and_timing(outputs, tmp_path):
    npz = _two_person(outputs)
    video = render_clip(npz, tmp_path / "v.gif", samples=1, max_frames=30, fps=30)
    frames = iio.imread(video, index=None)
    assert frames.shape[0] == 30 and frames.shape[2] == 2 * 384
    with Image.open(video) as im:
        delays = []
        for k in range(im.n_frames):
            im.seek(k)
            delays.append(im.info["duration"])
    assert sum(delays) == 1000  # 30 frames at 30 fps: 1 s, delays of 30 / 40 ms
    assert gif_durations(3, 30) == [30, 40, 30] and gif_durations(2, 100) == [20, 20]
    # frames differ (the motion and the frame counter): no frame was merged away
    assert len({f.tobytes() for f in frames}) == 30


def test_render_panels_api(tmp_path):
    joints = np.zeros((12, 2, 22, 3))
    joints[..., 1] = np.linspace(0.0, 1.7, 22)
    joints[:, 1, :, 0] = 1.0
    video = render_panels([joints], tmp_path / "one.mp4", titles=["only"], fps=24, panel_px=200)
    frames, meta = _mp4_frames(video)
    assert len(frames) == 12 and meta["size"][0] == 208 and meta["fps"] == 24.0
    with pytest.raises(ConfigError, match="unknown format"):
        render_panels([joints], tmp_path / "x.avi")


def test_render_outputs_writes_nothing_on_a_bad_file(outputs, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    for f in output_files(outputs):
        (run / f.name).write_bytes(f.read_bytes())
    (run / "zz_broken.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="zz_broken.npz"):
        render_outputs(run, tmp_path / "videos")
    assert not (tmp_path / "videos").exists()
    (run / "zz_broken.npz").unlink()
    videos = render_outputs(run, samples=1, max_frames=6, format="gif")
    assert [v.name for v in videos] == [f.stem + ".gif" for f in output_files(run)]
    assert all(v.parent == run / "videos" for v in videos)
    assert all(iio.imread(v, index=None).shape[0] == 6 for v in videos)


# ------------------------------------------------------------------------------------------------ command line
def test_png_still(outputs, tmp_path):
    npz = _two_person(outputs)
    still = render_clip(npz, tmp_path / "still.png", samples=1)
    image = iio.imread(still)
    assert image.shape[1] == 2 * 384 and image.shape[2] in (3, 4)
    # the default still is a generated frame (after the 16 context frames): white background, "generated" label
    body = image[40:-30, :384, :3]
    assert np.median(body.reshape(-1, 3), axis=0).tolist() == [255, 255, 255]
    first = iio.imread(render_clip(npz, tmp_path / "first.png", samples=1, still_frame=0))
    assert np.median(first[40:-30, :384, :3].reshape(-1, 3), axis=0).tolist() == _tint_rgb().tolist()
    with pytest.raises(ConfigError, match="still frame 99"):
        render_clip(npz, tmp_path / "x.png", still_frame=99)


def test_cli_renders_a_run_directory(outputs, tmp_path, capsys):
    assert main([str(outputs), "--out", str(tmp_path), "--samples", "1", "--max-frames", "10"]) == 0
    out = capsys.readouterr().out
    assert "rendered 2 video(s)" in out
    for f in output_files(outputs):
        assert imageio_ffmpeg.count_frames_and_secs(str(tmp_path / f"{f.stem}.mp4"))[0] == 10


@pytest.mark.parametrize("case", ["missing", "foreign", "samples", "max_frames", "format", "frame", "still"])
def test_cli_errors_are_one_line(outputs, tmp_path, capsys, case):
    npz = _two_person(outputs)
    args = {
        "missing": [str(tmp_path / "nope.npz")],
        "foreign": [str(write_foreign_npz(tmp_path / "foreign.npz"))],
        "samples": [str(npz), "--samples", "3"],
        "max_frames": [str(npz), "--max-frames", "0"],
        "format": [str(npz), "--format", "avi"],
        "frame": [str(npz), "--frame", "3"],
        "still": [str(outputs), "--format", "png", "--frame", str(FRAMES)],
    }[case]
    with pytest.raises(SystemExit) as exc:  # argparse errors exit through magnet.cli.fail
        raise SystemExit(main([*args, "--out", str(tmp_path / "videos")]))
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    expected = {"missing": "not found", "foreign": "key 'betas' is missing", "samples": "holds 2 sample",
                "max_frames": "--max-frames", "format": "invalid choice", "frame": "--format png",
                "still": f"still frame {FRAMES} is outside 0..{FRAMES - 1}"}[case]
    assert expected in err
    assert not (tmp_path / "videos").exists()


def test_cli_as_a_module_with_smplx_override(outputs, tmp_path, capsys):
    """``python -m magnet.visualize.render``: a missing --smplx file is one line, exit 2; the inf_cfg.yaml
    smpl_path is used when set, ``--default-skeleton`` overrides it."""
    npz = _two_person(outputs)
    res = subprocess.run([sys.executable, "-m", "magnet.visualize.render", str(npz), "--smplx",
                          str(tmp_path / "none.npz"), "--out", str(tmp_path)], cwd=REPO, capture_output=True,
                         text=True, check=False)
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and "none.npz" in res.stderr, res.stderr
    run = tmp_path / "run"
    run.mkdir()
    (run / npz.name).write_bytes(npz.read_bytes())
    (run / "inf_cfg.yaml").write_text(yaml.safe_dump({"sampling_task": "joint", "smpl_path": "missing/smplx"}))
    with pytest.raises(BodyModelError, match="names smpl_path missing/smplx.*--default-skeleton"):
        run_body_model(run)
    # a reference run whose smpl_path points to another machine renders with --default-skeleton
    assert main([str(run), "--default-skeleton", "--samples", "1", "--max-frames", "3"]) == 0
    assert imageio_ffmpeg.count_frames_and_secs(str(run / "videos" / f"{npz.stem}.mp4"))[0] == 3
    with pytest.raises(SystemExit) as exc:
        main([str(run), "--default-skeleton", "--smplx", "x.npz"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not allowed with argument" in err[0]
