"""DINA on the second low-dimensional (8D) image mouse (paper Sec. 4.3, Fig. 4c, "8D").

Each 8D recording of the release comes with its own images file.

  python -m dina_jax.main --config configs/eight_d_m2.py --workdir workdirs/eight_d_m2 --config.data.dir=/path/to/stringer
"""

from dina_jax.config import EIGHT_D_IMAGES, EIGHT_D_RECORDINGS, get_base_config


def get_config():
    config = get_base_config()
    config.data.recording = EIGHT_D_RECORDINGS[1]
    config.data.images = EIGHT_D_IMAGES[1]
    return config
