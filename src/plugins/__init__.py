"""Built-in plugins. They register through the same hooks as third-party packages."""

BUILTIN_PLUGINS = (
    "plugins.sources",
    "plugins.rust",
    "plugins.python_lang",
    "plugins.chunkers",
    "plugins.executors",
    "plugins.contexts",
    "plugins.tokenizers",
    "plugins.formats",
    "plugins.builders",
    "plugins.splits",
    "plugins.writers",
)
