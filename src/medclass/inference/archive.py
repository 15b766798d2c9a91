"""Scoring an archive in pieces: ``--shard I/N`` gives each of N processes (or cluster jobs) a contiguous block of
the sorted file list; the CSV grows batch by batch beside a small state file, so a stopped job keeps what it
scored and ``--resume`` goes on from there; ``medclass merge-predictions`` joins the shards into the table one
process would have written, after checking that every shard used the same model, settings and file list and that
none is missing or unfinished.

Hand-written: the job-array libraries (Dask, Ray, submitit) schedule work but do not know what a prediction table
is, and a resumable CSV needs no more than this."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medclass.errors import UserError
from medclass.io import atomic_write_text, atomic_writer

if TYPE_CHECKING:  # the predictor imports torch; merging tables needs none of it
    from medclass.inference.predictor import Prediction, Predictor

STATE_SUFFIX = ".medclass.json"
STATE_FORMAT = 1
# What must match for rows to belong to one table: the model, how its scores were turned into answers, the
# columns, and the file list the shards were cut from.
SAME = ("model_fingerprint", "classes", "calibrated", "tta", "gate", "top_k", "files_total", "listing")


def csv_header(classes: list[str], single_label: bool, k: int, gated: bool) -> list[str]:
    """The prediction CSV's columns: file, the class (or labels), the gate's verdict, top-k, every probability."""
    top_columns = [c for i in range(1, k + 1) for c in (f"top{i}", f"p_top{i}")]
    gate_columns = ["accepted", "reason", "ood_score", "quality"] if gated else []
    return ["file", "predicted" if single_label else "labels", *gate_columns, *top_columns,
            *(f"p:{c}" for c in classes)]  # fmt: skip


def csv_row(p: Prediction, classes: list[str], k: int, gated: bool) -> list[str]:
    top = [v for name, prob in p.top for v in (name, f"{prob:.6f}")]
    top += [""] * (2 * k - len(top))  # a refused image has no classes
    gate = []
    if gated and p.gate is not None:
        gate = [str(p.gate["accepted"]).lower(), p.gate["reason"] or "", f"{p.gate['ood_score']:.6f}",
                p.gate["quality"]["verdict"]]  # fmt: skip
    probs = [f"{p.probabilities[c]:.6f}" if c in p.probabilities else "" for c in classes]
    return [p.file, "|".join(p.predicted), *gate, *top, *probs]


def parse_shard(text: str) -> tuple[int, int]:
    """ "2/8" -> (2, 8): the second of eight shards."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text or "")
    if match is None or not 1 <= int(match[1]) <= int(match[2]):
        raise UserError(f"--shard {text!r}: give I/N with 1 <= I <= N, e.g. 2/8 for the second of eight shards")
    return int(match[1]), int(match[2])


def shard_files(files: list[Path], index: int, count: int) -> list[Path]:
    """Shard ``index`` of ``count`` (from 1): a contiguous block, so the shards in order are the whole list."""
    return files[(index - 1) * len(files) // count : index * len(files) // count]


def listing_digest(files: list[Path]) -> str:
    return hashlib.sha256("\n".join(str(f) for f in files).encode("utf-8", "surrogateescape")).hexdigest()[:16]


def model_fingerprint(predictor: Predictor) -> str:
    """The package's manifest (model, classes, preprocessing, calibration, gate, source run and checkpoint)."""
    text = json.dumps(predictor.manifest, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def state_path(table: Path) -> Path:
    return table.with_name(table.name + STATE_SUFFIX)


def read_state(table: Path) -> dict[str, Any]:
    path = state_path(table)
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(
            f"{table} has no {path.name} beside it, so it was not written by medclass predict with a CSV --out "
            "(or the file was moved without it)"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{path} is damaged ({exc}); score that shard again without --resume") from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT or any(k not in state for k in SAME):
        raise UserError(f"{path} is not a medclass prediction state file (format {STATE_FORMAT})")
    return state


def _complete_lines(table: Path) -> int:
    """Cut a line left half-written by a stopped job; the length of what remains."""
    data = table.read_bytes()
    keep = data.rfind(b"\n") + 1
    if keep != len(data):
        with table.open("r+b") as handle:
            handle.truncate(keep)
    return keep


@dataclass
class PredictionTable:
    """A prediction CSV written batch by batch, and its state file: model, settings, shard, file list, progress."""

    path: Path
    state: dict[str, Any]
    classes: list[str]
    single_label: bool
    done: set[str] = field(default_factory=set)

    @classmethod
    def open(
        cls,
        path: Path,
        predictor: Predictor,
        settings: dict[str, Any],
        files: list[Path],
        shard: tuple[int, int],
        single_label: bool,
        resume: bool,
    ) -> PredictionTable:
        """``settings``: calibrated, tta, gate (the mode) and top_k. With ``resume`` and an existing table, the
        files it holds (and those found unreadable) are ``done``; anything that differs is a one-line error."""
        state = {
            "format": STATE_FORMAT,
            "model": predictor.description,
            "model_fingerprint": model_fingerprint(predictor),
            "classes": list(predictor.classes),
            **settings,
            "files_total": len(files),
            "listing": listing_digest(files),
            "shard": list(shard),
            "files_in_shard": len(shard_files(files, *shard)),
            "scored": 0,
            "unreadable": [],
            "complete": False,
        }
        table = cls(path, state, list(predictor.classes), single_label)
        header = csv_header(table.classes, single_label, settings["top_k"], table.gated)
        if resume and path.exists():
            old = read_state(path)
            for key in (*SAME, "shard"):
                if old.get(key) != state[key]:
                    raise UserError(
                        f"--resume {path}: it was written with {key} {_shown(old.get(key))}, this command has "
                        f"{_shown(state[key])}; use the same model, inputs and options, or another --out"
                    )
            _complete_lines(path)
            with path.open(newline="", encoding="utf-8") as handle:
                rows = csv.reader(handle)
                if next(rows, None) != header:
                    raise UserError(f"--resume {path}: its columns are not this model's; use another --out")
                table.done = {row[0] for row in rows if row}
            state["unreadable"] = list(old.get("unreadable", []))
            state["scored"] = len(table.done)
            table.done |= {item["file"] for item in state["unreadable"]}
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("w", newline="", encoding="utf-8") as handle:
                csv.writer(handle).writerow(header)
        table._save()
        return table

    @property
    def gated(self) -> bool:
        return self.state["gate"] in ("warn", "refuse")

    def append(self, predictions: list[Prediction], unreadable: list[dict[str, str]]) -> None:
        """Add one batch's rows (flushed to disk) and record the progress."""
        if predictions:
            with self.path.open("a", newline="", encoding="utf-8") as handle:
                writer = csv.writer(handle)
                writer.writerows(csv_row(p, self.classes, self.state["top_k"], self.gated) for p in predictions)
                handle.flush()
                os.fsync(handle.fileno())
        self.state["scored"] += len(predictions)
        self.state["unreadable"] += unreadable
        self._save()

    def finish(self) -> None:
        self.state["complete"] = True
        self._save()

    def _save(self) -> None:
        atomic_write_text(state_path(self.path), json.dumps(self.state, indent=1) + "\n")


def _shown(value: Any) -> str:
    return "/".join(map(str, value)) if isinstance(value, list) and len(value) == 2 else repr(value)


def merge_tables(parts: list[Path], out: Path) -> dict[str, Any]:
    """Join shard tables into ``out`` in shard order (the table one process would have written). Every shard of
    one model, settings and file list must be there, once, and finished."""
    if out.suffix.lower() != ".csv":
        raise UserError(f"--out {out}: the merged table is a .csv file")
    if not parts:
        raise UserError("give the shard tables to merge (e.g. predictions-*-of-8.csv)")
    states = {}
    for part in parts:
        if not part.is_file():
            raise UserError(f"{part}: no such file")
        states[part] = read_state(part)
    first_part, first = next(iter(states.items()))
    for part, state in states.items():
        for key in SAME:
            if state[key] != first[key]:
                what = "file lists" if key in ("listing", "files_total") else key
                raise UserError(
                    f"{part} and {first_part} differ in {what} ({_shown(state[key])} vs {_shown(first[key])}): "
                    "shards must come from one model, one set of options and the same inputs"
                )
    count = first["shard"][1]
    by_index: dict[int, Path] = {}
    for part, state in states.items():
        index, total = state["shard"]
        if total != count:
            raise UserError(f"{part} is shard {index}/{total}, {first_part} is one of {count}")
        if index in by_index:
            raise UserError(f"{part} and {by_index[index]} are both shard {index}/{count}")
        by_index[index] = part
    missing = [str(i) for i in range(1, count + 1) if i not in by_index]
    if missing:
        raise UserError(f"shard(s) {', '.join(missing)} of {count} missing; score them with --shard I/{count}")
    for index, part in sorted(by_index.items()):
        state = states[part]
        if not state["complete"]:
            done = state["scored"] + len(state["unreadable"])
            raise UserError(
                f"{part} (shard {index}/{count}) is unfinished: {done} of {state['files_in_shard']} files; "
                "run its command again with --resume"
            )
    header: list[str] | None = None
    seen: set[str] = set()
    with atomic_writer(out, text=True) as target:  # streamed: an archive's table need not fit in memory
        writer = csv.writer(target)
        for _, part in sorted(by_index.items()):
            with part.open(newline="", encoding="utf-8") as handle:
                reader = csv.reader(handle)
                part_header = next(reader, None)
                if header is None:
                    header = part_header
                    writer.writerow(header or [])
                elif part_header != header:
                    raise UserError(f"{part}: its columns differ from the other shards'")
                for row in reader:
                    if not row:
                        continue
                    if row[0] in seen:
                        raise UserError(f"{row[0]} appears twice in the shards' tables; score its shard again")
                    seen.add(row[0])
                    writer.writerow(row)
    unreadable = [item for _, part in sorted(by_index.items()) for item in states[part]["unreadable"]]
    merged = {**first, "shard": [1, 1], "files_in_shard": first["files_total"], "scored": len(seen),
              "unreadable": unreadable, "complete": True, "merged_from": [str(p) for p in parts]}  # fmt: skip
    atomic_write_text(state_path(out), json.dumps(merged, indent=1) + "\n")
    return merged


__all__ = ["PredictionTable", "merge_tables", "parse_shard", "read_state", "shard_files", "state_path"]
