"""Training progress: Lightning's bar on a terminal; off one (the pipeline's logs, in test_pipeline.py) a line
per tenth of training. Neither carries Lightning's advertisements."""

import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios

FIT = """
from monosem.config import Instance, ModelCfg, TrainCfg, World
from monosem.training.toy import ToyStudyModule
from monosem.training.loop import fit
from monosem.worlds import generate_world
world = generate_world(World(n_features=12, d_embed=4, eps=0.2, n_eval=64, seed=3))
inst = Instance(point={}, seed=0, model=ModelCfg(neurons=10), train=TrainCfg(steps=160, batch_size=16, lr=0.01, t_max=8))
fit(ToyStudyModule(world, [inst]))
"""


def test_on_a_terminal_training_shows_lightnings_bar_and_no_lines_or_tips():
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a bar needs a width
    proc = subprocess.Popen([sys.executable, "-c", FIT], stdin=subprocess.DEVNULL, stdout=follower, stderr=follower)
    os.close(follower)
    out = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the terminal closed with the process
            break
        if not chunk:
            break
        out += chunk
    assert proc.wait(timeout=120) == 0, out.decode(errors="replace")[-2000:]
    text = out.decode(errors="replace")
    assert "Epoch 0: 100%" in text and "\r" in text  # the bar, redrawn in place
    assert "  step " not in text and "💡" not in text and "LeafSpec" not in text
