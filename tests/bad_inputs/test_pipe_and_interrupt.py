"""Problem 8 of issue 26, in real processes: a closed pipe is quiet, and Ctrl-C ends a command or a training in
one line (what was interrupted and where a rerun resumes), with no traceback and nothing half-written."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

SRC = str(Path(__file__).parents[2] / "src")


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}


def test_info_into_a_closed_pipe_is_quiet(world):
    """`robustsoup info … --history | head -1`: head closes the pipe after one line."""
    before = sorted(p.name for p in world.iterdir())
    command = (
        f"{sys.executable} -c 'from robustsoup.cli import main; raise SystemExit(main())' info {world}/a.safetensors"
    )
    done = subprocess.run(
        f"set -o pipefail; {command} | head -c 20",
        shell=True,
        capture_output=True,
        text=True,
        env=_env(),
        executable="/bin/bash",
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("{") and len(done.stdout) == 20
    assert done.stderr == "" and "Traceback" not in done.stderr
    assert sorted(p.name for p in world.iterdir()) == before


TRAIN = textwrap.dedent(
    """
    import sys, torch
    from pathlib import Path
    from robustsoup.checkpoint import CheckpointMeta
    from robustsoup.data import ImageSplit
    from robustsoup.train.loop import TrainSettings
    from robustsoup.train.policies import CleanInputs
    from robustsoup.train.run import train_and_checkpoint

    out = Path(sys.argv[1])
    torch.manual_seed(0)
    images = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8)
    data = ImageSplit(images, torch.randint(0, 10, (64,)), "digits", "train")
    meta = CheckpointMeta("slow", "preact_resnet_small", {"width": 4, "activation": "relu"}, "digits", 10,
                          [0.3] * 3, [0.3] * 3, training={"seed": 0})
    settings = TrainSettings(epochs=100000, lr=0.01, batch_size=16, schedule="cosine", augmentation="none")
    train_and_checkpoint(meta.build(), meta, data, CleanInputs(), settings, out, torch.device("cpu"))
    """
)


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_during_training_prints_one_line_and_says_where_a_rerun_resumes(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(TRAIN)
    out = tmp_path / "slow.safetensors"
    process = subprocess.Popen(
        [sys.executable, str(script), str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
        # a shell's background job (`make test &`, nohup) ignores SIGINT, and a child inherits that: Python then
        # installs no KeyboardInterrupt handler. A user's Ctrl-C reaches a foreground process; so does this one.
        preexec_fn=_default_sigint,
    )
    resume = out.with_suffix(".resume.pt")
    deadline = time.monotonic() + 120
    while not resume.exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.1)
    assert resume.exists(), process.communicate()[1]
    time.sleep(0.3)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130
    assert "Traceback" not in stdout + stderr
    # progress bars and plain progress lines (robustsoup.progress: "desc: i/N … elapsed, ETA …") are the
    # progress helper's; what the interrupt adds is one line, the last
    progress_line = re.compile(r"^.+: \d+/\d+ .*elapsed, ETA ")
    lines = [
        line
        for line in stderr.replace("\r", "\n").splitlines()
        if line.strip() and "%|" not in line and not progress_line.match(line)
    ]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("robustsoup: interrupted (Ctrl-C) while training slow")
    assert "a rerun resumes after epoch" in lines[0] and str(resume) in lines[0]
    assert not out.exists() and not out.with_suffix(".json").exists()
