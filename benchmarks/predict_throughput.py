"""Prediction throughput: `medclass predict` (in process, the predict_files API the command runs) against bare
loops that decode, preprocess and run the same model on the same files: a plain PyTorch loop on the package's
network and a bare onnxruntime session on the package's exported model.onnx. All run alternately in this process
(best of --rounds), on the chest X-ray test JPEGs (624 files, 1000-2900 px).

    python benchmarks/predict_throughput.py [--model RUN_OR_PACKAGE] [--files 200] [--rounds 3] [--json out.json]

Printed: images/s of each, and the headline ratios `predict/torch ratio R`, `predict/onnxruntime ratio R`
(medclass with its default gate `warn`, which measures image quality and the out-of-distribution score, and with
`--gate off`). The bare loops decode the way medclass does (PIL with JPEG draft mode, squash to the package's
decode size); a plain PIL decode (no draft) is timed too, as what a hand-written script usually does.
Without --model a small chest X-ray model (the shipped config, resnet18 at 64 px, a few steps) is trained first.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def tiny_model(out: Path, size: int) -> Path:
    from medclass import load_config, run_experiment

    config = load_config(
        REPO / "configs" / "chest_xray.yaml",
        [f"output_dir={out}", "trainer.max_epochs=1", "trainer.limit_train_batches=3", "trainer.progress_bar=false",
         f"data.input_size={size}", "evaluation.bootstrap=0", "evaluation.report=false"],
    )  # fmt: skip
    return run_experiment(config).run_dir


def bare_decode(path: Path, size: int, channels: int, draft: bool) -> np.ndarray:
    with Image.open(path) as image:
        mode = "L" if channels == 1 else "RGB"
        if draft and image.format == "JPEG":
            image.draft(mode, (size, size))
        image = image.convert(mode).resize((size, size), Image.Resampling.BILINEAR)
        array = np.asarray(image, dtype=np.uint8)
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


def bare_loop(files: list[Path], size: int, channels: int, batch: int, run, draft: bool = True) -> float:
    started = time.perf_counter()
    for start in range(0, len(files), batch):
        images = np.stack([bare_decode(f, size, channels, draft) for f in files[start : start + batch]])
        run(images)
    return len(files) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--input-size", type=int, default=64, help="for the model trained without --model")
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    import onnxruntime as ort

    from medclass.inference.onnx_export import export_onnx
    from medclass.inference.package import is_package, load_package, run_package
    from medclass.inference.predictor import load_predictor, predict_files

    data = Path(os.environ.get("MEDCLASS_DATA", REPO.parent / "shared" / "data"))
    files = sorted((data / "chest_xray" / "test").rglob("*.jpeg"))[: args.files]
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or tiny_model(Path(tmp), args.input_size)
        folder = model if is_package(model) else run_package(model)
        package = load_package(folder)
        onnx_path = Path(tmp) / "model.onnx"
        export_onnx(package, onnx_path)
        pre = package.preprocessing
        size, channels = pre["decode_size"], pre["channels"]
        net = package.module().eval()
        options = ort.SessionOptions()
        session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        input_name = session.get_inputs()[0].name

        def torch_run(images: np.ndarray) -> None:
            with torch.inference_mode():
                torch.softmax(net(torch.from_numpy(images)).float(), dim=1)

        def ort_run(images: np.ndarray) -> None:
            logits = session.run(None, {input_name: images})[0]
            np.exp(logits - logits.max(axis=1, keepdims=True))

        torch_predictor, onnx_predictor = load_predictor(folder), load_predictor(onnx_path)
        names = [str(f) for f in files]
        cases = {
            "bare torch": lambda: bare_loop(files, size, channels, args.batch_size, torch_run),
            "bare onnxruntime": lambda: bare_loop(files, size, channels, args.batch_size, ort_run),
            "bare torch, plain PIL decode": lambda: bare_loop(
                files, size, channels, args.batch_size, torch_run, draft=False
            ),
        }
        for label, predictor in (("torch", torch_predictor), ("onnx", onnx_predictor)):
            for gate in ("warn", "off"):
                for workers in (0, 2):

                    def run(predictor=predictor, gate=gate, workers=workers) -> float:
                        started = time.perf_counter()
                        result = predict_files(predictor, names, args.batch_size, gate=gate, workers=workers)
                        assert len(result.predictions) == len(files)
                        return len(files) / (time.perf_counter() - started)

                    cases[f"medclass predict ({label}, gate {gate}, workers {workers})"] = run
        for run in cases.values():  # warm-up: first-call costs and the file cache
            run()
        rates: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(args.rounds):
            for name, run in cases.items():
                rates[name].append(run())
    best = {name: max(values) for name, values in rates.items()}
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, onnxruntime {ort.__version__}"
    print(f"machine: {machine}; {len(files)} chest X-ray JPEGs -> {size} px, batch {args.batch_size}, best of "
          f"{args.rounds}")  # fmt: skip
    for name, rate in best.items():
        print(f"  {name:52s} {rate:7.1f} images/s")
    default_torch = best["medclass predict (torch, gate warn, workers 2)"]
    default_onnx = best["medclass predict (onnx, gate warn, workers 2)"]
    print(f"predict/torch ratio {default_torch / best['bare torch']:.2f}")
    print(f"predict/onnxruntime ratio {default_onnx / best['bare onnxruntime']:.2f}")
    gate_off = best["medclass predict (torch, gate off, workers 2)"]
    one_thread = best["medclass predict (torch, gate warn, workers 0)"]
    print(f"predict/torch ratio, gate off {gate_off / best['bare torch']:.2f}")
    print(f"predict/torch ratio, decoding in the main thread {one_thread / best['bare torch']:.2f}")
    if args.json:
        args.json.write_text(
            json.dumps({"machine": machine, "files": len(files), "size": size, "rates": rates}, indent=1)
        )


if __name__ == "__main__":
    main()
