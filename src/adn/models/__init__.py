"""Architectures. Importing this package registers every model."""

from . import resnet  # noqa: F401
from . import mobilenetv2  # noqa: F401
from . import swin  # noqa: F401
from . import vit  # noqa: F401
