"""The interface every language plugin implements (Rust is one of them, not a special case)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from core.parsing import Edit
from core.records import ParsedBlob

if TYPE_CHECKING:
    from core.context import Reference, UnitQuery


class Language(Protocol):
    name: str
    extensions: tuple[str, ...]

    @property
    def cache_key(self) -> str:
        """Identifies grammar and extractor versions; part of every parsed-blob cache key."""

    def parse(self, source: bytes, previous: tuple[bytes, ParsedBlob] | None = None,
              edits: list[Edit] | None = None) -> ParsedBlob:
        """Extract the units of one blob (already checked to be UTF-8 text).

        ``previous`` is an earlier version of the same file (its bytes and the
        ParsedBlob this method returned for it); a language may use it to parse
        incrementally. ``edits`` (optional: core passes it only to a ``parse`` that
        declares it) are byte spans (old start, old end, new start, new end), in order,
        outside which ``previous`` and ``source`` are the same: git's changed lines,
        checked against both versions. The result must depend on neither."""

    def module_path(self, path: str) -> str:
        """The module path a file's units live in, e.g. ``ledger_core::store`` (may be empty),
        from its path alone."""

    # optional: module paths that read the tree's project files (crate names from Cargo.toml)
    module_files: tuple[str, ...]  # optional: names of files whose presence ``module_paths`` reads

    def module_paths(self, projects: dict[str, bytes], present: frozenset[str]) -> Callable[[str], str]:
        """``module_path`` for the files of a tree whose project files (``project_files``
        by name) are ``projects`` (path -> bytes) and whose files named in
        ``module_files`` are at ``present``. The chunk stage names a commit's new code
        with the function for its tree, its old code with the one for its parent's. Its
        ``projects`` (a ``core.chunking.LazyFiles``) also names each file's content by its
        blob id (``content_key(path)``, ``content_keys()``) and reads several files at once
        (``prefetch``): what a plugin derives from a file's bytes may be kept by blob id
        across trees, and a function made for one tree may serve another that reads the same."""

    def versions(self) -> dict[str, str]:
        """Versions worth recording in the manifest (grammar, parser library...)."""

    # -- cross-file context (optional: a language without them supports context=same_file only)
    # names of files read by content: build files the index reads (e.g. "Cargo.toml"), and
    # files ``module_paths`` reads (Rust's crate roots "lib.rs", "main.rs" for their `mod` lines)
    project_files: tuple[str, ...]

    def summarize(self, parsed: ParsedBlob, options: dict[str, Any]) -> Any:
        """What the symbol index keeps of one parsed file (cached per blob); ``options``
        holds the context strategy's rendering settings (``max_item_chars``, ``bodies``)."""

    def symbol_index(self, options: dict[str, Any]) -> SymbolIndex:
        """An empty index, filled and kept up to date by ``SymbolIndex.update``."""


class SymbolIndex(Protocol):
    def update(self, files: dict[str, Any], projects: dict[str, bytes | None]) -> None:
        """Replace files (path -> summary, None when removed or unparseable) and project
        files (path -> bytes, None when removed)."""

    def references(self, query: UnitQuery, related: bool = True) -> list[Reference]:
        """Definitions the unit refers to (tier ``direct``), and with ``related`` the
        definitions around them (methods called, impl blocks, types in their signatures)."""

    def definitions(self, path: str) -> list[Reference]:
        """Every definition of one file (tier ``file``). An index whose qualified names
        depend on more than the file's blob has an int ``naming`` that changes whenever
        they may have (what is kept of definitions across updates is keyed by it)."""


def file_extension(path: str) -> str:
    """``.rs`` for ``src/a.rs``; empty for ``Makefile`` or ``.github/x``-style dot directories."""
    dot = path.rfind(".")
    return path[dot:] if dot > path.rfind("/") else ""
