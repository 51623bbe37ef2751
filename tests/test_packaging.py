"""A non-editable install is complete: every config ships in the package and loads by name
from any folder, with no checkout on the path."""

import os
import pathlib
import shutil
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_a_built_install_loads_every_config_from_another_folder(tmp_path):
    # Build from a copy, so that the build leaves nothing in the checkout.
    source = tmp_path / "src"
    shutil.copytree(
        ROOT,
        source,
        symlinks=True,
        ignore=shutil.ignore_patterns(
            ".git", ".venv*", "workdirs", "build", "dist", "*.egg-info", "__pycache__", ".*cache"
        ),
    )
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", target]
        + [source],
        check=True,
        timeout=600,
    )
    packaged = sorted(p.name for p in (target / "dina_jax" / "configs").glob("*.py"))
    assert packaged == sorted(p.name for p in (ROOT / "dina_jax" / "configs").glob("*.py"))
    assert not (target / "configs").exists()  # the root link is not installed

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(target)
    code = (
        "import sys, dina_jax\n"
        "assert dina_jax.__file__.startswith(sys.argv[1]), dina_jax.__file__\n"
        "names = dina_jax.available_configs()\n"
        "print(len([dina_jax.load_config(name) for name in names]), *names)\n"
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = subprocess.run(
        [sys.executable, "-c", code, str(target)],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    count, *names = result.stdout.split()
    configs = [name for name in packaged if not name.startswith("_")]
    assert int(count) == len(configs) + 1 and {"base", "synthetic", "m1", "tiny"} <= set(names)
