"""The interface every language plugin implements (Rust is one of them, not a special case)."""

from __future__ import annotations

from typing import Protocol

from core.records import ParsedBlob


class Language(Protocol):
    name: str
    extensions: tuple[str, ...]

    @property
    def cache_key(self) -> str:
        """Identifies grammar and extractor versions; part of every parsed-blob cache key."""

    def parse(self, source: bytes, previous: tuple[bytes, ParsedBlob] | None = None) -> ParsedBlob:
        """Extract the units of one blob (already checked to be UTF-8 text).

        ``previous`` is an earlier version of the same file (its bytes and the
        ParsedBlob this method returned for it); a language may use it to parse
        incrementally. The result must not depend on it."""

    def module_path(self, path: str) -> str:
        """The module path a file's units live in, e.g. ``ledger_core::store`` (may be empty)."""

    def versions(self) -> dict[str, str]:
        """Versions worth recording in the manifest (grammar, parser library...)."""


def file_extension(path: str) -> str:
    """``.rs`` for ``src/a.rs``; empty for ``Makefile`` or ``.github/x``-style dot directories."""
    dot = path.rfind(".")
    return path[dot:] if dot > path.rfind("/") else ""
