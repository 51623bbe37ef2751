"""The embedded default: DINA on the simulated V1 dataset, sized to train in minutes on 2 CPU cores.

The simulated recording (2,000 neurons, 2,800 images, written in the real .mat formats) is generated
on first use into the cache folder and reused afterwards.

  python -m dina_jax.main --config configs/synthetic.py --workdir workdirs/synthetic
"""

from dina_jax.config import get_base_config


def get_config():
    config = get_base_config()
    config.data.source = "synthetic"
    config.data.dir = ""  # "" means the cache folder; the files are generated there.
    config.data.recording = "natimg2800_SIM0_2026-01-01.mat"
    config.data.images = "images_natimg2800_all.mat"
    # A narrower image tower and neural tower so that an epoch takes seconds on a CPU.
    config.model.image.channels = (16, 32)
    config.model.image.stem_channels = 16
    config.model.image.depths = (1, 2)
    config.model.image.num_heads = (1, 2)
    config.model.image.head_hidden = 16
    config.model.neural.d_model = 16
    config.model.neural.mlp_hidden = 256
    config.train.num_epochs = 30
    config.train.patience = 8
    return config
