"""The out-of-distribution score of the gate in front of a model, as a module: the smallest class-conditional
Mahalanobis distance of an image's pooled features, divided by the acceptance threshold chosen on validation
(so 1.0 is the threshold: above it an image looks unlike the training images).

The class means and the shared precision matrix are fitted by pytorch-ood's ``Mahalanobis`` detector
(medclass.evaluation.gate); this module only evaluates the same formula with stored buffers, so the score
travels in the package's safetensors and inside the ONNX graph. It computes in float64: the precision matrix of a
small training set has a wide range of values, and float32 would lose the score's lower digits.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from medclass.errors import ModelError
from medclass.io import read_json
from medclass.models.classifier import Classifier

SCORE_TENSORS = ("means", "precision", "threshold")
GATE_TENSORS, GATE_SETTINGS = "gate.safetensors", "gate.json"  # in a run's gate folder


class MahalanobisScore(nn.Module):
    def __init__(self, means: torch.Tensor, precision: torch.Tensor, threshold: float | torch.Tensor = 1.0) -> None:
        super().__init__()
        self.register_buffer("means", means.detach().to(torch.float64).clone())
        self.register_buffer("precision", precision.detach().to(torch.float64).clone())
        self.register_buffer("threshold", torch.as_tensor(threshold, dtype=torch.float64).reshape(()).clone())

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> MahalanobisScore:
        return cls(tensors["means"], tensors["precision"], tensors["threshold"])

    def raw(self, features: torch.Tensor) -> torch.Tensor:
        """pytorch-ood's outlier score: min over classes of 0.5 (z - mu_c)^T P (z - mu_c), float64 (B,)."""
        centred = features.to(torch.float64)[:, None, :] - self.means[None]  # (B, C, D)
        distances = 0.5 * ((centred @ self.precision) * centred).sum(dim=-1)  # (B, C)
        return distances.min(dim=1).values

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return (self.raw(features) / self.threshold).to(torch.float32)


class GatedNet(nn.Module):
    """uint8 images at decode size -> (logits, out-of-distribution score), one backbone pass (ONNX export)."""

    def __init__(self, net: Classifier, preprocess: nn.Module, score: MahalanobisScore) -> None:
        super().__init__()
        self.preprocess = preprocess
        self.net = net
        self.score = score

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, features = self.net.forward_with_features(self.preprocess(images))
        return logits, self.score(features)


def score_bytes(score: MahalanobisScore) -> bytes:
    """The score's tensors as a safetensors file's bytes (tensors only: nothing executable)."""
    from safetensors.torch import save

    return save({name: tensor.contiguous() for name, tensor in score.state_dict().items()})


def load_score(path: str | Path) -> MahalanobisScore:
    """The score stored by :func:`score_bytes`; ValueError names what is wrong with a damaged file."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise ValueError(f"{path} is not a readable safetensors file ({exc})") from None
    missing = [name for name in SCORE_TENSORS if name not in tensors]
    if missing:
        raise ValueError(f"{path} lacks {', '.join(missing)}")
    means, precision, threshold = (tensors[name] for name in SCORE_TENSORS)
    dims = means.shape[-1] if means.ndim == 2 else -1
    if precision.shape != (dims, dims) or threshold.numel() != 1:
        raise ValueError(f"{path}: means {tuple(means.shape)} and precision {tuple(precision.shape)} do not fit")
    if not (torch.isfinite(means).all() and torch.isfinite(precision).all() and float(threshold) > 0):
        raise ValueError(f"{path} holds non-finite statistics or a threshold that is not positive")
    return MahalanobisScore(means, precision, threshold)


def read_gate(folder: Path, run_path: Path) -> tuple[MahalanobisScore, dict[str, Any]] | None:
    """A run's stored gate (its score and settings), or None when the folder holds none.

    A damaged gate is a ModelError that says how to fit it again for the run at run_path."""
    folder = Path(folder)
    if not (folder / GATE_SETTINGS).is_file():
        return None
    try:
        return load_score(folder / GATE_TENSORS), read_json(folder / GATE_SETTINGS)
    except ValueError as exc:
        raise ModelError(f"{folder}: {exc}; fit it again with `medclass gate fit {run_path}`") from None
