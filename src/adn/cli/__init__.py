"""The ``adn`` command line: ``adn <command> [options]`` (``python -m adn`` is the same).

Each command lives in its own module of this package and exposes ``main(argv) -> int``; this file only
dispatches, and turns every user error -- of every command -- into one line on stderr (``--debug`` shows the
traceback instead). Commands call down into the library (``adn.train``, ``adn.evaluation`` ...), never the reverse.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Sequence

from ..errors import UsageError

#: command -> (module, function, one-line help)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "train": ("adn.cli.train", "main", "train an adaptive-depth network by self-distillation (= train_adn.py)"),
    "eval": ("adn.cli.eval", "main", "evaluate one sub-network (--skip-cfg) or all of them (--all-subnets)"),
    "calibrate": ("adn.cli.calibrate", "main", "calibrate every sub-network's BatchNorm statistics of a model"),
    "predict": ("adn.cli.predict", "main", "classify image files with one sub-network"),
    "models": ("adn.cli.models", "main", "list models, or the sub-network table (FLOPs, params) of one model"),
    "bench": ("adn.cli.bench", "main", "measure latency/FLOPs/accuracy of every sub-network, Pareto plot"),
    "select": ("adn.cli.select", "main", "pick the most accurate sub-network within a latency/FLOPs budget"),
    "export": ("adn.cli.export", "main", "export one sub-network as a standalone TorchScript/ONNX file"),
    "serve": ("adn.cli.serve", "main", "serve a switchable ONNX file on Ray Serve, the depth picked per request"),
    "push": (
        "adn.cli.push",
        "main",
        "share a model: config, weights and model card in a folder, or on the Hugging Face Hub",
    ),
    "detect": ("adn.cli.detect", "main", "train/evaluate adaptive-depth detectors (adn detect train|eval)"),
}


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {desc}" for name, (_, _, desc) in COMMANDS.items()]
    return "usage: adn <command> [options]   (adn <command> --help for its options)\n\ncommands:\n" + "\n".join(lines)


def _one_line(exc: BaseException) -> str:
    """The message of ``exc`` as one line; an error re-raised from a DataLoader worker carries the worker's
    traceback in its message: keep its last line (the original message)."""
    text = str(exc).strip()
    if "Original Traceback" in text:
        text = text.splitlines()[-1].split(": ", 1)[-1]
    return " ".join(text.split("\n")) if text else type(exc).__name__


def run_command(func: Callable[[list[str]], int], argv: Sequence[str], debug: bool = False) -> int:
    """Run ``func(argv)``; user errors become one line on stderr and exit status 2, a diverged training run
    (non-finite loss) exit status 1, Ctrl-C outside training 130, a closed output pipe (``| head``) a quiet 0."""
    try:
        return int(func(list(argv)) or 0)
    except KeyboardInterrupt:
        print("adn: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (adn eval ... | head): nothing more to say to it
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except (UsageError, ValueError, FileNotFoundError, NotADirectoryError, PermissionError) as exc:
        if debug:
            raise
        print(f"adn: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except FloatingPointError as exc:  # training diverged (non-finite loss): not a usage error
        if debug:
            raise
        print(f"adn: error: {_one_line(exc)}", file=sys.stderr)
        return 1


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    if argv[0] in ("-V", "--version"):
        from .. import __version__

        print(f"adn {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"adn: error: unknown command {name!r}; choose from {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    module, func_name, _ = COMMANDS[name]
    return run_command(getattr(importlib.import_module(module), func_name), rest, debug)


__all__ = ["COMMANDS", "main", "run_command"]
