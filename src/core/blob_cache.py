"""On-disk cache of parsed blobs, keyed by language cache key and blob id.

Shared by runs and sweep jobs: entries are written to a temporary file and renamed
into place, so concurrent writers of the same blob are harmless (same content) and a
reader never sees half an entry. Entries are ``marshal`` data: plain containers only,
several times faster than JSON to read and write, and unlike pickle loading them can
never run code. The marshal format version is part of the cache path.
"""

from __future__ import annotations

import marshal
import os
import tempfile
from pathlib import Path
from typing import Any

CACHE_FORMAT = 4


class BlobCache:
    def __init__(self, root: Path, lang_key: str):
        self.dir = Path(root) / f"units-f{CACHE_FORMAT}-m{marshal.version}" / lang_key

    def _path(self, blob: str) -> Path:
        return self.dir / blob[:2] / blob[2:]

    def get(self, blob: str) -> dict[str, Any] | None:
        try:
            with open(self._path(blob), "rb") as fh:
                entry = marshal.loads(fh.read())
        except FileNotFoundError:
            return None
        except (ValueError, EOFError, TypeError, OSError):
            return None  # a damaged entry is recomputed and overwritten
        return entry if isinstance(entry, dict) else None

    def has(self, blob: str) -> bool:
        return self._path(blob).exists()

    def put(self, blob: str, entry: dict[str, Any]) -> None:
        path = self._path(blob)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(marshal.dumps(entry))
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
