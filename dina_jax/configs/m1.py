"""DINA on mouse M1 of the natural-image set (paper Table 1, first row).

python -m dina_jax.main --config configs/m1.py --workdir workdirs/m1 --config.data.dir=/path/to/stringer
"""

from dina_jax.config import NATIMG_RECORDINGS, get_base_config


def get_config():
    config = get_base_config()
    config.data.recording = NATIMG_RECORDINGS[0]
    return config
