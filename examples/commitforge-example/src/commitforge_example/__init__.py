"""commitforge-example: an example third-party commitforge plugin (the ``blocks`` chunker).

Kept free of imports: commitforge's Hydra search-path plugin looks up the config package
``commitforge_example.conf`` on every run, which imports this package.
"""

__version__ = "0.1.0"
