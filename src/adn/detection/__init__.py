"""Adaptive-depth object detection: torchvision's Faster R-CNN, Mask R-CNN and RetinaNet on adn backbones,
trained by self-distillation, every sub-network evaluated in COCO mAP. See docs/detection.md."""

from .backbone import AdaptiveFPNBackbone, build_body, freeze_batch_norms, tiny_resnet
from .models import KINDS, AdaptiveDetector, build_detector, fasterrcnn, load_detector_weights, maskrcnn, retinanet

__all__ = [
    "KINDS",
    "AdaptiveDetector",
    "AdaptiveFPNBackbone",
    "build_body",
    "build_detector",
    "fasterrcnn",
    "freeze_batch_norms",
    "load_detector_weights",
    "maskrcnn",
    "retinanet",
    "tiny_resnet",
]
