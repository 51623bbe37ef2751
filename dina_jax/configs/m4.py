"""DINA on mouse M4 of the natural-image set (paper Table 1, row M4).

python -m dina_jax.main --config configs/m4.py --workdir workdirs/m4 --config.data.dir=/path/to/stringer
"""

from dina_jax.config import NATIMG_RECORDINGS, get_base_config


def get_config():
    config = get_base_config()
    config.data.recording = NATIMG_RECORDINGS[3]
    return config
