"""Models: one factory for timm and HuggingFace networks, heads, and pretrained weights that work offline."""

from medclass.models.classifier import Classifier
from medclass.models.factory import check_model_name, create_model, default_normalization
from medclass.models.heads import HEADS, build_head

__all__ = ["HEADS", "Classifier", "build_head", "check_model_name", "create_model", "default_normalization"]
