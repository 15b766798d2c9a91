"""Kaggle datasets through kagglehub (credentials from KAGGLE_USERNAME/KAGGLE_KEY or ~/.kaggle/kaggle.json)."""

from __future__ import annotations

from pathlib import Path

from medclass.errors import DataError


def download_kaggle(handle: str) -> Path:
    """The local folder of a Kaggle dataset, downloaded (or taken from kagglehub's cache) on first use."""
    try:
        import kagglehub
    except ImportError:
        raise DataError("data.kaggle needs the kagglehub package: pip install kagglehub") from None
    try:
        return Path(kagglehub.dataset_download(handle))
    except Exception as exc:  # noqa: BLE001 - network, HTTP and credential errors all mean the same to the user
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(
            f"data.kaggle: could not download {handle} ({type(exc).__name__}: {detail[:200]}); "
            "check the network and your Kaggle credentials (KAGGLE_USERNAME and KAGGLE_KEY, or ~/.kaggle/kaggle.json), "
            "or download it yourself and point data.root / data.csv at it without data.kaggle"
        ) from None
