"""The flags the reference's README of today uses beyond the seed's: feature self-distillation (``--fpn``), an
external teacher (``train_adn_distill.py``'s ``--distillation``/``--compile``, with ``--teacher``/
``--teacher-weights`` since adn downloads nothing), ``--torch-compile``, ``--cache-dataset`` and torchvision's
``--world-size``/``--dist-url``. Declared and checked here; :mod:`adn.training.fit` hands them, typed, to
:func:`adn.training.teacher.make_distillation`, :func:`adn.data.cache.dataset_index_cache` and
:func:`adn.runtime.multinode.process_group_spec`."""

from __future__ import annotations

import argparse

from ..errors import UsageError
from ..training.teacher import REFERENCE_TEACHER


def add_reference_today_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("distillation options of the reference of today")
    g.add_argument(
        "--fpn",
        "--feature-distillation",
        dest="fpn",
        action="store_true",
        help="feature self-distillation: the base-net also distils the super-net's pooled stage outputs "
        "(every stage but the first: layer2-layer4 for ResNets, as the reference's --fpn)",
    )
    g.add_argument(
        "--teacher",
        default=None,
        metavar="ARCH",
        help=f"distil the super-net from an external, frozen teacher: tv:NAME, timm:NAME or a registered model "
        f"(the reference: {REFERENCE_TEACHER}); needs --teacher-weights",
    )
    g.add_argument("--teacher-weights", default=None, metavar="FILE", help="the teacher's local weights file")
    g.add_argument(
        "--distillation",
        action="store_true",
        help=f"train_adn_distill.py's switch: distil from --teacher (default {REFERENCE_TEACHER})",
    )
    g.add_argument("--compile", action="store_true", help="torch.compile the teacher (train_adn_distill.py)")
    g = p.add_argument_group("torchvision reference flags")
    g.add_argument(
        "--torch-compile", action="store_true", help="torch.compile the model for training and per-epoch evaluation"
    )
    g.add_argument(
        "--cache-dataset",
        action="store_true",
        help="cache the ImageFolder file index (the directory scan) and reuse it on later runs; ADN_CACHE_DIR "
        "sets where (default ~/.cache/adn/imagefolder)",
    )
    g.add_argument(
        "--world-size",
        dest="dist_world_size",  # the group's actual size is DistState.world_size (a checkpoint's world_size)
        type=int,
        metavar="N",
        default=None,
        help="number of processes: torchrun's WORLD_SIZE (must agree if given), or of srun tasks started without "
        "torchrun (with --dist-url)",
    )
    g.add_argument(
        "--dist-url", default="env://", help="torch.distributed init method, e.g. tcp://HOST:PORT (default: env://)"
    )


def check_reference_today_args(args: argparse.Namespace) -> None:
    """One line for each contradiction among these flags."""
    if args.distillation and args.teacher is None:
        args.teacher = REFERENCE_TEACHER
    if args.teacher is not None and args.teacher_weights is None:
        raise UsageError(
            f"--teacher {args.teacher} needs --teacher-weights FILE (a local weights file: adn downloads nothing)"
        )
    if args.teacher_weights is not None and args.teacher is None:
        raise UsageError(f"--teacher-weights {args.teacher_weights}: name the teacher's architecture with --teacher")
    if args.compile and args.teacher is None:
        raise UsageError("--compile compiles the teacher: add --teacher/--distillation, or use --torch-compile")
    if args.dist_world_size is not None and args.dist_world_size < 1:
        raise UsageError(f"--world-size must be >= 1, got {args.dist_world_size}")


__all__ = ["add_reference_today_args", "check_reference_today_args"]
