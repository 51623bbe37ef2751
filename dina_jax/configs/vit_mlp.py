"""ViT-MLP baseline (paper Table 1) on mouse M1: ViT image encoder + MLP neural readout.

Same data, loss, optimizers and schedule as configs/m1.py; only the model differs. The ViT has
4 x 4 patches of the 64 x 256 resized image (16 x 64 tokens, one output value per token), width
192, 6 blocks, 3 heads (config.model.vit). Trains from scratch unless
--config.model.pretrained_path points at a local .npz of weights (see
dina_jax.models.load_pretrained).

python -m dina_jax.main --config configs/vit_mlp.py --workdir workdirs/vit_mlp_m1 --config.data.dir=/path/to/stringer
"""

from dina_jax.config import NATIMG_RECORDINGS, get_base_config


def get_config():
    config = get_base_config()
    config.data.recording = NATIMG_RECORDINGS[0]
    config.model.name = "vit_mlp"
    return config
