"""``adn.convert``: turn an existing residual classifier (torchvision, timm, your own) into an adaptive-depth
model, in place.

:func:`convert` keeps the model's module tree, its parameter names and its own ``forward``; it finds the
residual *stages*, makes the last ``floor(n/2)`` blocks of each stage of ``n >= 2`` blocks skippable, gives the
norms of the mandatory blocks their twins (copies of the main norms) and swaps the instance's class for a cached
subclass ``(AdaptiveDepthNet, OriginalClass)``. The result *is* an :class:`~adn.core.network.AdaptiveDepthNet` (and
still an ``OriginalClass``): ``model(x, skip=...)``, ``model.skip``, ``num_stages``, :func:`adn.count_flops`,
:func:`adn.calibrate`, :func:`adn.bench_subnets`, :func:`adn.export_subnet`, training -- all work as for the
registered models. Its state dict is the original's plus the twins' ``*.skip_norm.*`` entries, so
:func:`load_pretrained` reads the original's weights files.

How stages are found
--------------------
1. **Family rules** (:data:`FAMILIES`): a small table keyed by class (matched by module and name anywhere in
   the model's class hierarchy, so nothing optional is imported), each reading the stages from the model's own
   attributes and declaring what the registered models declare:

   ======================  =====================================================  =============================
   family                  stages                                                 declarations
   ======================  =====================================================  =============================
   tv ResNet/ResNeXt/WRN   ``layer1`` .. ``layer4``                               ``downsample`` norms shared
   tv RegNet               the blocks of each ``trunk_output`` stage              ``proj`` norms shared
   tv ConvNeXt             the ``CNBlock`` sequences in ``features``
   tv EfficientNet V1/V2   ``features[1:-1]`` (one sequence per stage)
   tv MobileNetV2/V3       flat ``features`` grouped by ``use_res_connect``       MobileNetV2: the registered
                                                                                  model's outside twins
   tv Swin V1/V2           ``features[1::2]``                                     patch-merging twins, no
                                                                                  drop-path when skipped
   tv ViT                  flat ``encoder.layers`` in ``num_stages`` groups
   timm ResNet             ``layer1`` .. ``layer4``                               ``downsample`` norms shared
   timm ConvNeXt           ``stages[i].blocks``
   timm EfficientNet/MNV3  ``blocks[i]`` (one sequence per stage)
   timm ViT                flat ``blocks`` in ``num_stages`` groups
   ======================  =====================================================  =============================

   A *flat* model (ViT) has one run of identical layers; it is grouped into ``num_stages`` consecutive groups
   (default 4, fewer if the model has fewer than 8 layers), the larger groups first.
   MobileNet-style flat sequences are split into stages at every block that is not residual: a stage is a
   non-residual block (stride or width change) followed by the residual ones.

2. **Generic fallback** (any other model): one forward probe on the ``meta`` device records every module's input
   and output shape. A *block candidate* is a module with weights (besides norms), not a bare container
   (``nn.Sequential``/``nn.ModuleList``/``nn.ModuleDict``) nor a norm, called once with one tensor and returning
   one tensor. Bottom-up through the tree, each container's runs of consecutive same-class candidates are split
   MobileNet-style (a new stage starts at every block that is not residual); groups of >= 2 blocks are stages,
   and a container holding a stage is not a candidate itself (the finest granularity wins). If that yields one
   stage of residual blocks only, it is a flat encoder and is grouped into ``num_stages``. Norms on paths named
   ``downsample``, ``shortcut`` or ``proj`` are declared shared.

**Residual** means: output shape = input shape, and with every weight of the block zeroed except its norms'
the output still depends on the input (an identity shortcut carries it; a plain block outputs a constant).
Every skippable block, from a rule, the fallback or ``stages=``, is checked that way (on one real batch-1
input of the probed shape) before anything is changed; a model that fails gets one ``ValueError`` line.

Pickling: the converted class is created at run time, so instances pickle (``torch.save(model)``,
``copy.deepcopy``) through :func:`_restore`, which rebuilds the class from the importable original one.
"""

from .builders import create_converted, load_pretrained
from .classes import _restore, adaptive_class  # noqa: F401  (_restore: what pickles name)
from .convert import convert
from .families import FAMILIES, Family

__all__ = ["FAMILIES", "Family", "adaptive_class", "convert", "create_converted", "load_pretrained"]
