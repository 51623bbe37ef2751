"""VGG16-MLP baseline (paper Table 1) on mouse M1: VGG-16 image encoder + MLP neural readout.

Same data, loss, optimizers and schedule as configs/m1.py; only the model differs. Trains from
scratch unless --config.model.pretrained_path points at a local .npz of VGG-16 weights
(keys like "conv1_1/kernel", first kernel summed over RGB; see dina_jax.models.load_pretrained).

python -m dina_jax.main --config configs/vgg16_mlp.py --workdir workdirs/vgg16_mlp_m1 --config.data.dir=/path/to/stringer
"""

from dina_jax.config import NATIMG_RECORDINGS, get_base_config


def get_config():
    config = get_base_config()
    config.data.recording = NATIMG_RECORDINGS[0]
    config.model.name = "vgg16_mlp"
    return config
