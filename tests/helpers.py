"""What the tests that run the command line as a user would share: the command and a safe subprocess runner."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ADN = [sys.executable, "-m", "adn"]  # what the `adn` console script runs


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a command under test: the project importable and one intra-op thread per process
    (tests run tiny models, where thread oversubscription only costs time)."""
    return {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1", **(extra or {})}


def run(
    cmd: list[str], cwd: Path = ROOT, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    """Run ``cmd`` with :func:`child_env` (plus ``env``) in a process group of its own: on a timeout the whole
    group is killed (DataLoader workers, torchrun's workers), so a hung run leaves nothing behind."""
    proc = subprocess.Popen(
        cmd,
        cwd=cwd,
        env=child_env(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def randomize_norms(model, twins_only: bool = False, seed: int | None = None):
    """Random parameters and statistics for every norm (or only the twins), so that using the wrong norm set shows
    in the outputs (fresh twins are copies of their main norms). ``seed``: seed torch's RNG first."""
    import torch

    import adn

    if seed is not None:
        torch.manual_seed(seed)
    if twins_only:
        norms = [m.skip_norm for m in model.modules() if isinstance(m, adn.SkipAwareNorm)]
    else:
        norms = [m for m in model.modules() if isinstance(m, adn.core.network.NORM_TYPES)]
    with torch.no_grad():
        for m in norms:
            for name, t in [*m.named_parameters(recurse=False), *m.named_buffers(recurse=False)]:
                if t.is_floating_point():
                    t.uniform_(*((0.5, 1.5) if name in ("weight", "running_var") else (-0.5, 0.5)))
    return model


def train_resnet20(epochs: int = 4):
    """A resnet20 trained briefly on the built-in digits (super- and base-net cross-entropy, seed 0): accurate
    enough (> 50 % Acc@1 per depth after 4 epochs) for a test to tell a right export from a wrong one."""
    import torch
    from torch.utils.data import DataLoader

    import adn
    from adn.data.loaders import build_calibration_set

    torch.manual_seed(0)
    model = adn.create_model("resnet20", num_classes=10)
    data = DataLoader(build_calibration_set(image_size=32), batch_size=64, shuffle=True)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    model.train()
    for _ in range(epochs):
        for x, y in data:
            loss = sum(torch.nn.functional.cross_entropy(model(x, skip=s), y) for s in (False, True))  # super, base
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()
