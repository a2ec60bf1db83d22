"""Architectures. Importing this package registers every model."""

from . import resnet  # noqa: F401
