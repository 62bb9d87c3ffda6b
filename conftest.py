"""Root conftest: its presence puts the repository root on ``sys.path``, so ``.venv/bin/pytest`` imports the
in-tree ``bayesrobust`` package without an install."""
