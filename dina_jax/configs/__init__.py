"""The experiment configs, one ``<name>.py`` per run with a ``get_config()``.

Shipped inside the package so that ``dina_jax.load_config(name)`` works after any install; in a
clone, ``configs/`` at the repository root is a link to this folder, so
``python -m dina_jax.main --config configs/<name>.py`` names the same files.
"""
