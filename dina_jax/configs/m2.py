"""DINA on mouse M2 of the natural-image set (paper Table 1, row M2).

python -m dina_jax.main --config configs/m2.py --workdir workdirs/m2 --config.data.dir=/path/to/stringer
"""

from dina_jax.config import NATIMG_RECORDINGS, get_base_config


def get_config():
    config = get_base_config()
    config.data.recording = NATIMG_RECORDINGS[1]
    return config
