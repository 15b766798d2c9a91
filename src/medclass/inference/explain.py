"""Why the model decided: class-activation heatmaps from pytorch-grad-cam (HiResCAM, Grad-CAM, Grad-CAM++,
LayerCAM, Eigen-CAM) overlaid on the image, for CNNs and for transformers (ViT/DeiT tokens and Swin feature maps
reshaped to a grid).

The default is HiResCAM (Draelos & Carin 2020): gradient times activation per location, summed over channels.
Grad-CAM first averages each channel's gradient over the map, and for a class whose evidence is mostly the
absence of the other class's features (BreastMNIST's "malignant" in a two-logit model) those averages cancel to a
map that is negative everywhere and is then clipped to all zeros. HiResCAM has no such averaging and, for a CNN
ending in pooling and a linear layer, provably shows the locations that raised that class's score.

What medclass adds is only the choice of layer (the last feature stage timm reports, or the last transformer
block's first norm), the token reshaping and the check that a map shows something: a map that is the same value
everywhere (no location raised the class's score) is reported as degenerate, never drawn as an empty overlay."""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch import nn

from medclass.errors import ModelError, UserError

METHODS = ("hirescam", "gradcam", "gradcam++", "layercam", "eigencam")
DEFAULT_METHOD = "hirescam"


def target_layer(
    net: nn.Module, input_size: int | None = None
) -> tuple[nn.Module, Callable[[torch.Tensor], torch.Tensor] | None]:
    """(layer whose activations and gradients make the heatmap, reshape for token outputs or None).

    For CNNs, the deepest feature stage whose map is still at least 3 x 3 at this input size (at 28 px the last
    stage of a ResNet is 1 x 1, and a heatmap from it is a single value)."""
    backbone = getattr(net, "backbone", net)
    blocks = getattr(backbone, "blocks", None)
    if blocks is not None and len(blocks) and hasattr(blocks[-1], "norm1"):  # ViT / DeiT / BEiT style
        prefix = int(getattr(backbone, "num_prefix_tokens", 1))
        return blocks[-1].norm1, _tokens_to_grid(prefix)
    feature_info = getattr(backbone, "feature_info", None)
    if feature_info is not None:
        modules = dict(backbone.named_modules())
        stages = feature_info if isinstance(feature_info, list) else feature_info.get_dicts()
        usable = [s for s in stages if input_size is None or input_size // int(s.get("reduction", 1)) >= 3]
        name = (usable or stages[:1])[-1]["module"]
        layer = modules.get(name)
        if layer is not None:
            nhwc = type(backbone).__name__.lower().startswith(("swin", "maxvit"))  # timm keeps these channels-last
            return layer, (_channels_last_to_first if nhwc else None)
    raise ModelError(f"cannot find a layer for heatmaps in {type(backbone).__name__}; heatmaps need a timm model")


def _tokens_to_grid(prefix: int) -> Callable[[torch.Tensor], torch.Tensor]:
    def reshape(tokens: torch.Tensor) -> torch.Tensor:
        patches = tokens[:, prefix:, :]
        side = int(math.isqrt(patches.shape[1]))
        return patches.reshape(tokens.shape[0], side, side, -1).permute(0, 3, 1, 2)

    return reshape


def _channels_last_to_first(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 3, 1, 2) if x.ndim == 4 else x


def _cam_class(method: str):
    from pytorch_grad_cam import EigenCAM, GradCAM, GradCAMPlusPlus, HiResCAM, LayerCAM

    classes = {"hirescam": HiResCAM, "gradcam": GradCAM, "gradcam++": GradCAMPlusPlus, "layercam": LayerCAM,
               "eigencam": EigenCAM}  # fmt: skip
    if method not in classes:
        raise ModelError(f"unknown heatmap method {method!r}; choose one of {', '.join(METHODS)}")
    return classes[method]


@dataclass
class Heatmaps:
    """(B, H, W) maps in [0, 1] at the decode size, and which of them are degenerate (one value everywhere)."""

    maps: np.ndarray
    degenerate: np.ndarray
    method: str

    def note(self, index: int, class_name: str) -> str | None:
        """Why map ``index`` is not drawn, or None when it is fine."""
        if not self.degenerate[index]:
            return None
        others = " or ".join(m for m in METHODS[:3] if m != self.method)
        return (
            f"no heatmap: {self.method} finds no location that raises the score of {class_name!r} (the map is "
            f"the same everywhere); try another method (--method {others})"
        )


NOT_FOR_ENSEMBLES = (
    "heatmaps are drawn for one network and this ensemble averages several: draw them with one of its members "
    "(listed in its manifest's source.members)"
)


def why_no_heatmaps(predictor: object) -> str | None:
    """Why heatmaps cannot be drawn for this predictor, or None when they can."""
    package = getattr(predictor, "package", None)
    if package is None:
        return "heatmaps need a PyTorch model package, not an ONNX file"
    return NOT_FOR_ENSEMBLES if "ensemble" in package.manifest else None


def heatmaps(package, images: np.ndarray, class_indices: list[int], method: str = DEFAULT_METHOD) -> Heatmaps:
    """Maps for the given class of each uint8 (B, C, H, W) image, with their degeneracy flags."""
    if "ensemble" in package.manifest:
        raise UserError(NOT_FOR_ENSEMBLES)
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    layer, reshape = target_layer(package.net, package.preprocessing.get("input_size"))
    model = package.module()  # the CAM library sees the same graph prediction uses
    inputs = torch.from_numpy(np.array(images, dtype=np.float32))  # a float copy: gradients flow to the input
    with _cam_class(method)(model=model, target_layers=[layer], reshape_transform=reshape) as cam:
        raw = cam(input_tensor=inputs, targets=[ClassifierOutputTarget(i) for i in class_indices])
    finite = np.isfinite(raw).reshape(len(raw), -1).all(axis=1)
    maps = np.nan_to_num(raw).astype(np.float32)
    spread = np.ptp(maps.reshape(len(maps), -1), axis=1)
    return Heatmaps(maps, ~finite | (spread < 1e-6), method)


def overlay(image: np.ndarray, heatmap: np.ndarray, weight: float = 0.5) -> np.ndarray:
    """(H, W, 3) uint8: the image (C, H, W uint8, grey or RGB) with the heatmap in the jet colour map."""
    from pytorch_grad_cam.utils.image import show_cam_on_image

    rgb = np.transpose(image, (1, 2, 0)).astype(np.float32) / 255.0
    if rgb.shape[-1] == 1:
        rgb = np.repeat(rgb, 3, axis=-1)
    return show_cam_on_image(rgb, heatmap, use_rgb=True, image_weight=weight)


def png_bytes(array: np.ndarray, min_side: int = 224, legend: str | None = None) -> bytes:
    """PNG of an (H, W, 3) uint8 array, enlarged (nearest) to at least ``min_side`` so small images stay visible;
    with ``legend``, a strip below it reads the jet colours (blue: low, red: high) and says what they mean."""
    image = Image.fromarray(array)
    if min(image.size) < min_side:
        scale = math.ceil(min_side / min(image.size))
        image = image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)
    if legend is not None:
        image = _with_legend(image, legend)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _with_legend(image: Image.Image, caption: str) -> Image.Image:
    """``image`` above a colour bar in the overlay's jet map (cv2's, as pytorch-grad-cam draws it) and a caption,
    wrapped to the image's width (never cut)."""
    import cv2
    from PIL import ImageDraw, ImageFont

    font = ImageFont.load_default(size=11)
    width, bar, line = image.width, 12, 13
    lines: list[str] = []
    for word in caption.split():
        if lines and font.getlength(f"{lines[-1]} {word}") <= width - 4:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    ramp = np.linspace(0, 255, width).astype(np.uint8)[None, :]
    colours = cv2.cvtColor(cv2.applyColorMap(ramp, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
    canvas = Image.new("RGB", (width, image.height + bar + 4 + line * (1 + len(lines))), "white")
    canvas.paste(image, (0, 0))
    canvas.paste(Image.fromarray(np.repeat(colours, bar, axis=0)), (0, image.height + 2))
    draw = ImageDraw.Draw(canvas)
    top = image.height + bar + 3
    draw.text((2, top), "low", fill="black", font=font)
    draw.text((width - 2, top), "high", fill="black", font=font, anchor="ra")
    for k, text in enumerate(lines, 1):
        draw.text((width // 2, top + line * k), text, fill="black", font=font, anchor="ma")
    return canvas
