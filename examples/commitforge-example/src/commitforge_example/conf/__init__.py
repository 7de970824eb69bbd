# Hydra config package of commitforge-example (entry point group "commitforge.conf").
# Hydra reads a pkg:// config package only when it has an __init__.py.
