"""Architectures. Importing this package registers every model."""

from . import (
    mobilenetv2,  # noqa: F401
    resnet,  # noqa: F401
    swin,  # noqa: F401
    vit,  # noqa: F401
)
