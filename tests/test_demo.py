"""``make demo`` end to end in quick mode (a handful of steps everywhere): every artefact and the report."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent


def test_quick_demo_writes_every_artefact_and_reuses_finished_steps(tmp_path):
    out, data = tmp_path / "demo", tmp_path / "data"
    cmd = [sys.executable, "-m", "magnet.demo", "--quick", "--out", str(out), "--data", str(data)]
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900, check=False)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    report = (out / "REPORT.md").read_text()
    for task in ("joint", "partner_prediction", "motion_control_live", "inbetweening"):
        run = out / "samples" / task
        assert len(list(run.glob("*.npz"))) == 1 and (run / "eval_dict_c.yaml").is_file()
        assert f"## {task}" in report
        assert list((out / "videos" / task).glob("*.mp4")) and list((out / "videos" / task).glob("*.png"))
    pp = yaml.safe_load((out / "samples" / "partner_prediction" / "eval_dict_c.yaml").read_text())
    assert "driven 0" in pp["meta"]["evaluated_persons"]
    for base in ("hold_last_pose", "mirror_driven"):
        assert (out / "baselines" / "partner_prediction" / base / "eval_dict_c.yaml").is_file()
    for base in ("repeat_context", "random_training_clip"):
        assert (out / "baselines" / "joint" / base / "eval_dict_c.yaml").is_file()
    assert "python train.py experiment=demo_dfot" in report and "| metric | unit | model |" in report
    # a second run reuses every finished step
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.count("done earlier") >= 10 and "train.py" not in res.stderr
