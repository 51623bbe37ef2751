"""The smallest configuration that still has every part of the model; used by the tests.

python -m dina_jax.main --config configs/tiny.py --workdir /tmp/tiny
"""

from dina_jax.config import get_base_config


def get_config():
    config = get_base_config()
    config.data.source = "synthetic"
    config.data.dir = ""
    config.data.recording = "natimg2800_SIM0_2026-01-01.mat"
    config.data.images = "images_natimg2800_all.mat"
    config.data.n_spont_pcs = 4
    config.data.synthetic.n_neurons = 48
    config.data.synthetic.n_images = 160
    config.data.synthetic.gain_scale = 4.0  # 44 neurons need a strong signal to decode anything.
    config.model.image.channels = (8, 16)
    config.model.image.stem_channels = 8
    config.model.image.depths = (1, 1)
    config.model.image.num_heads = (1, 2)
    config.model.image.head_hidden = 8
    config.model.image.mlp_ratio = 2
    config.model.image.attention = "materialized"  # Compiles faster; blockwise is tested apart.
    config.model.neural.d_model = 8
    config.model.neural.mlp_hidden = 32
    config.model.neural.attention = "blockwise"
    config.model.neural.block_size = 16
    config.model.image.block_size = 16
    config.model.readout.mlp_hidden = 32
    config.model.vgg16.widths = (8, 8, 16, 16, 16)
    config.model.vgg16.depths = (1, 1, 1, 1, 1)
    config.model.vgg16.head_hidden = 8
    config.model.vit.attention = "materialized"
    config.model.vit.dim = 16
    config.model.vit.depth = 1
    config.model.vit.num_heads = 2
    config.model.vit.head_hidden = 8
    config.model.vit.block_size = 16
    config.train.batch_size = 16  # Divides by 8: runs unchanged on 1, 2, 4 or 8 devices.
    config.train.num_epochs = 2
    config.train.log_every = 1
    config.train.checkpoint_every_steps = 4
    # The tests' expectations were set with DESIGN.md's starting rates, kept here.
    config.optim.image.learning_rate = 1e-4
    config.optim.neural.learning_rate = 1e-5
    config.eval.batch_size = 16
    config.analysis.n_images = 2
    config.analysis.occlusion.stride = 8
    config.analysis.ablation.random_draws = 2
    config.analysis.attention.samples = 2
    return config
