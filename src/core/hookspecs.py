"""Hook specifications: the whole plugin surface of commitforge.

Every hook receives a ``register`` callback and calls it once per plugin it provides::

    register(name, factory, schema)

``name`` is what a config selects (``chunker=ast``), ``factory`` is called with the
validated group config (an instance of ``schema``) and returns the plugin object, and
``schema`` is a dataclass describing that group's keys (``name`` included). Built-in
plugins (``plugins.BUILTIN_PLUGINS``) use these hooks exactly as third-party packages do
through the ``commitforge`` entry-point group::

    [project.entry-points.commitforge]
    my_plugin = "my_package.plugin_module"
"""

import pluggy

PROJECT = "commitforge"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

# The order of kinds is the order of the config groups in conf/config.yaml.
KINDS = (
    "source",
    "language",
    "chunker",
    "context",
    "tokenizer",
    "format",
    "builder",
    "split",
    "writer",
    "executor",
)


@hookspec
def register_source(register):
    """Register commit sources: where CommitRecords come from (``source=git``)."""


@hookspec
def register_language(register):
    """Register languages: file extensions and a parser that extracts Units from a blob."""


@hookspec
def register_chunker(register):
    """Register chunkers: turn a parsed file into the chunks that are paired across a commit."""


@hookspec
def register_context(register):
    """Register cross-file context strategies."""


@hookspec
def register_tokenizer(register):
    """Register tokenizers."""


@hookspec
def register_format(register):
    """Register prompt formats (special tokens and segment layout)."""


@hookspec
def register_builder(register):
    """Register example builders."""


@hookspec
def register_split(register):
    """Register train/val/test split strategies."""


@hookspec
def register_writer(register):
    """Register dataset writers."""


@hookspec
def register_executor(register):
    """Register executors: how per-commit work is spread over processes or machines."""
