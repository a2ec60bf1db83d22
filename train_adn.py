"""Entry point compatible with the reference code's commands:

    python train_adn.py --model resnet50 --test-only --resume model_145.pth --skip-cfg False False False False ...
    torchrun --nproc_per_node=4 train_adn.py --model resnet50 --data-path /data/ILSVRC2012 ...

Same options as ``adn train`` (``python train_adn.py --help``).
"""

import sys

from adn.cli import run_command
from adn.cli.train import main

if __name__ == "__main__":
    argv = sys.argv[1:]
    sys.exit(run_command(main, [a for a in argv if a != "--debug"], debug="--debug" in argv))
