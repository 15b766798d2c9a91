"""Group ids (patient, study, lesion) as keyed hashes: run outputs (splits.csv, predictions) say which images
belong together without saying who they belong to.

The hash is HMAC-SHA256 of the id with a secret key that never enters a run directory: ``$MEDCLASS_GROUP_KEY``
when set (share it between machines whose runs must agree), else a random key created once in the cache folder
(``group-key``, readable by its owner only). A plain hash of a patient id could be reversed by hashing every
plausible id; without the key it cannot.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

KEY_FILE = "group-key"
_HEX_CHARS = 16  # 64 bits: collisions are negligible for any dataset size


def group_secret(cache_dir: Path) -> bytes:
    """The key: $MEDCLASS_GROUP_KEY, else ``cache_dir``/group-key (created on first use)."""
    given = os.environ.get("MEDCLASS_GROUP_KEY")
    if given:
        return given.encode()
    path = cache_dir / KEY_FILE
    if not path.is_file():
        cache_dir.mkdir(parents=True, exist_ok=True)
        try:
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process made it first
        else:
            with os.fdopen(descriptor, "w") as handle:
                handle.write(secrets.token_hex(32))
    return path.read_text().strip().encode()


def group_key(value: str, secret: bytes) -> str:
    """The keyed hash of one group id, as it appears in run outputs."""
    return "g-" + hmac.new(secret, value.encode(), hashlib.sha256).hexdigest()[:_HEX_CHARS]
