"""DINA on the second whitened-image mouse (paper Sec. 4.3, Fig. 4c, "whitened").

The recording name is an unconfirmed best guess (see WHITE_RECORDINGS in dina_jax/config.py);
override it with --config.data.recording if the figshare release names it differently.

  python -m dina_jax.main --config configs/white_m2.py --workdir workdirs/white_m2 --config.data.dir=/path/to/stringer
"""

from dina_jax.config import WHITE_IMAGES, WHITE_RECORDINGS, get_base_config


def get_config():
    config = get_base_config()
    config.data.recording = WHITE_RECORDINGS[1]
    config.data.images = WHITE_IMAGES
    return config
