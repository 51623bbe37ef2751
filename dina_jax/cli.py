"""Command-line parsing shared by ``dina_jax.main`` and the ``experiments/`` scripts.

``app.run(main, flags_parser=parse_flags)`` turns every flag or ``--config.a.b=value`` problem
into one line on stderr with exit code 2 instead of a traceback, and lets ``--config`` name a
packaged config (``--config m1``) from any folder.
"""

from __future__ import annotations

import sys

from absl import flags

USAGE_ERROR = 2


def fail(message: str) -> None:
    """Prints a one-line error and exits with the usage-error code."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(USAGE_ERROR)


def resolve_config_argument(argv: list[str]) -> list[str]:
    """``argv`` with the ``--config`` value made a file: a name or a ``configs/<name>.py`` missing
    from the current folder becomes the packaged config (``dina_jax.config.config_path``)."""
    from dina_jax.config import config_path

    def resolve(value: str) -> str:
        path, sep, args = value.partition(":")  # config_flags' FILE:ARGS form
        resolved = config_path(path)
        return (str(resolved) if resolved.is_file() else path) + sep + args

    out = list(argv)
    for i, arg in enumerate(out):
        if arg == "--config" and i + 1 < len(out):
            out[i + 1] = resolve(out[i + 1])
        elif arg.startswith("--config="):
            out[i] = "--config=" + resolve(arg.removeprefix("--config="))
    return out


def parse_flags(argv: list[str]) -> list[str]:
    """Parses flags, turning every config or flag problem into a one-line error (exit 2)."""
    argv = resolve_config_argument(argv)
    try:
        return flags.FLAGS(argv)
    except flags.Error as error:
        fail(str(error).splitlines()[0])
    except SyntaxError as error:  # the config file itself (absl loads it while parsing)
        fail(
            f"cannot load config {error.filename}: {error.msg} at line {error.lineno} "
            "(fix the file, or pass one of configs/)"
        )
    except (AttributeError, KeyError, TypeError, ValueError) as error:
        _bad_override(argv, error)
    return []


def _bad_override(argv: list[str], error: Exception) -> None:
    # ml_collections reports an unknown override key as AttributeError("'name'").
    bad = [a for a in argv[1:] if a.startswith("--config.")]
    detail = str(error).strip("\"'")
    fail(f"bad config override {' '.join(bad) or ''}: {detail} (unknown key or wrong type)")


def define_config_overrides(help_text: str = "Config overrides (--config.a.b=value).") -> None:
    """Defines ``--config`` as overrides ``--config.<section>.<field>=value``, checked against
    the base config as ``dina_jax.main`` checks them (for scripts that apply them to configs
    of their own: :func:`config_overrides`)."""
    from ml_collections import config_flags

    from dina_jax.config import get_base_config

    try:  # config_flags parses the overrides in sys.argv as the flag is defined
        config_flags.DEFINE_config_dict("config", get_base_config(), help_text)
    except (AttributeError, KeyError, TypeError, ValueError) as error:
        _bad_override(sys.argv, error)


def config_overrides() -> dict:
    """The ``--config.*`` overrides given on the command line: {"train.num_epochs": 10, ...}."""
    from ml_collections import config_flags

    return dict(config_flags.get_override_values(flags.FLAGS["config"]))
