"""The viser viewer (magnet.visualize.view): serves on loopback, shows the chosen row and frame, meshes with SMPL-X."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from motion_outputs import make_outputs
from smplx_fixture import make_synthetic_smplx_npz

from magnet.body import load_body_model
from magnet.errors import ConfigError
from magnet.evaluation.io import load_output_npz
from magnet.geometry import quat_to_matrix
from magnet.motion_files import clip_joints
from magnet.visualize.render import BONES
from magnet.visualize.view import DEFAULT_HOST, MotionViewer, main

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def outputs(synthetic_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("viewer_outputs")
    make_outputs(synthetic_root, out, frames=24, samples=2, context=8)
    return out


@pytest.fixture(scope="module")
def smplx_file(tmp_path_factory):
    return make_synthetic_smplx_npz(tmp_path_factory.mktemp("smplx") / "SMPLX_NEUTRAL.npz")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.status, r.read().decode("utf-8", "replace")


def test_viewer_serves_on_loopback_and_stops(outputs):
    port = _free_port()
    viewer = MotionViewer(outputs, port=port)
    assert viewer.host == DEFAULT_HOST == "127.0.0.1"
    with viewer:
        assert viewer.url == f"http://127.0.0.1:{port}"
        status, page = _get(viewer.url)
        assert status == 200 and "<html" in page.lower()
        # the player advances frames while "play" is ticked; unticked it holds still
        time.sleep(0.4)
        assert viewer.frame > 0
        viewer.gui_play.value = False
        time.sleep(0.1)
        held = viewer.frame
        time.sleep(0.3)
        assert viewer.frame == held
    with pytest.raises(urllib.error.URLError):
        _get(f"http://127.0.0.1:{port}")


def test_show_draws_the_chosen_row_and_frame(outputs):
    with MotionViewer(outputs, port=_free_port()) as viewer:
        viewer.gui_play.value = False
        names = [c.name for c in viewer.clips]
        two = next(i for i, c in enumerate(viewer.clips) if c.output.num_persons == 2)
        viewer.show(two, 2, 15)
        clip = load_output_npz(outputs / f"{names[two]}.npz")
        joints = clip_joints(clip, viewer.body_model, [2])[0, 15]  # [P, 22, 3]
        for p in range(2):
            bones = viewer._persons[p]["bones"]
            expected = np.stack([joints[p, [a for a, _ in BONES]], joints[p, [b for _, b in BONES]]], axis=1)
            np.testing.assert_allclose(bones.points, expected, atol=1e-6)
            assert bones.visible
        assert viewer.gui_clip.value == names[two] and viewer.gui_row.value == "sample 2"
        assert viewer.gui_frame.value == 15 and "generated" in viewer.gui_status.content
        viewer.show(two, 0, 3)
        assert "context" in viewer.gui_status.content and viewer.gui_row.value == "ground truth"
        # a one-person clip hides the second skeleton
        one = 1 - two
        viewer.show(one, 1, 0)
        assert viewer._persons[0]["bones"].visible and not viewer._persons[1]["bones"].visible
        assert "mesh" not in viewer._persons[0]  # default skeleton: no mesh
        # scrubbing through the GUI slider moves the frame
        viewer.gui_frame.value = 7
        assert viewer.frame == 7
        with pytest.raises(ConfigError, match="row 3 is out of range"):
            viewer.show(two, 3, 0)


def test_meshes_with_an_smplx_file(outputs, smplx_file):
    with MotionViewer(outputs, port=_free_port(), smplx=smplx_file) as viewer:
        viewer.gui_play.value = False
        assert viewer.has_mesh and not viewer.body_model.is_default
        two = next(i for i, c in enumerate(viewer.clips) if c.output.num_persons == 2)
        viewer.show(two, 1, 10)
        out = viewer.clips[two].output
        model = load_body_model(smplx_file)
        f32 = torch.float32
        root = torch.as_tensor(out.T_world_root[1, 10], dtype=f32)
        verts, _ = model.smplx_forward(quat_to_matrix(torch.as_tensor(out.body_joint_rotations[1, 10], dtype=f32)),
                                       quat_to_matrix(root[:, :4]), root[:, 4:],
                                       torch.as_tensor(out.betas[1, 10], dtype=f32))
        for p in range(2):
            mesh = viewer._persons[p]["mesh"]
            assert mesh.visible
            np.testing.assert_allclose(mesh.vertices, verts[p].numpy(), atol=1e-5)
        # meshes off: hidden, skeletons still shown
        viewer.gui_mesh.value = False
        assert not viewer._persons[0]["mesh"].visible and viewer._persons[0]["bones"].visible


def test_cli_serves_until_interrupted(outputs):
    port = _free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "magnet.visualize.view", str(outputs), "--port", str(port)],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.time() + 60
        line = ""
        while time.time() < deadline and "viewer:" not in line:
            line = proc.stdout.readline()
            if not line and proc.poll() is not None:
                break
        assert f"at http://127.0.0.1:{port}" in line, line + proc.stderr.read() if proc.poll() is not None else line
        assert _get(f"http://127.0.0.1:{port}")[0] == 200
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=30)
    assert code == 0


@pytest.mark.parametrize("case", ["missing", "port"])
def test_cli_errors_are_one_line(outputs, tmp_path, capsys, case):
    args = {"missing": [str(tmp_path / "nope")], "port": [str(outputs), "--port", "70000"]}[case]
    with pytest.raises(SystemExit) as exc:
        raise SystemExit(main(args))
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ")
    assert {"missing": "not found", "port": "outside 0..65535"}[case] in err
