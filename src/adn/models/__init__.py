"""Architectures. Importing this package registers every model."""

from . import (
    convnext,  # noqa: F401
    mobilenetv2,  # noqa: F401
    resnet,  # noqa: F401
    swin,  # noqa: F401
    vit,  # noqa: F401
)
