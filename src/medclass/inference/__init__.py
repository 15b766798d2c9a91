"""Using trained models: safe checkpoint loading and prediction."""

from medclass.inference.checkpoint import load_module, read_checkpoint
from medclass.inference.predict import predict_logits, predict_scores

__all__ = ["load_module", "predict_logits", "predict_scores", "read_checkpoint"]
