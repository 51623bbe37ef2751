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
    # A narrower image tower and neural tower, so that an epoch takes about a minute on 2 CPU
    # cores (the cost per step is in benchmarks/README.md).
    config.model.image.channels = (8, 16)
    config.model.image.stem_channels = 8
    config.model.image.depths = (1, 1)
    config.model.image.num_heads = (1, 1)
    config.model.image.mlp_ratio = 2
    config.model.image.head_hidden = 16
    # DS-Net's full block (position encoding, split projection, normed residual streams), with
    # which every demo number in docs/decisions.md was measured; the paper configs use Eq. 1-3
    # as printed ("paper"). The demo's cost of each is in docs/decisions.md.
    config.model.image.block = "dsnet"
    config.model.neural.d_model = 8
    config.model.neural.mlp_hidden = 256
    # Eq. 7 as printed: no skip around the population attention, so every neuron reaches the
    # readout through it (the previous demo's skip let the attention go uniform; issue 13).
    config.model.neural.residual = False
    # The budget is CPU minutes, so the demo buys optimizer steps with a smaller batch (the
    # paper configs keep 128). Its rates, far above DESIGN.md's starting point 1e-4 / 1e-5, are
    # the base config's since 2026-12-07 and stay pinned here, as the demo was measured with
    # them; each choice and its measured effect: docs/decisions.md, "Training".
    config.train.batch_size = 32
    # 96 epochs (~75 min on 2 cores): the smallest budget measured within a few points of the
    # recipe's plateau. On the demo's mouse, seed 0, test top-1: 13.6% at 8 epochs, 42.5% at 24,
    # 68.6% at 48, 72.1% at 64, 73.2% at 72, 78.9% at 96, 82.5% at 128 (with the same mean
    # rank as 96, 2.0, and a validation top-1 under a point higher); learning curves, seeds
    # and mice in docs/decisions.md.
    config.train.num_epochs = 96
    config.train.patience = 24
    config.optim.image.learning_rate = 2e-3
    config.optim.image.warmup_epochs = 0.5
    config.optim.neural.learning_rate = 1e-3
    config.optim.neural.warmup_epochs = 0.5
    # Three additions to the paper's model against overfitting the 2,240 training responses at
    # batch 32, each measured by experiments/ablations.py (docs/decisions.md): the repeat halves
    # (two noisy views per stimulus), a parameter EMA for validation and `best`, and a decoupled
    # weight decay on the neural tower's weight matrices; not on the per-neuron embeddings,
    # whose size scales the attention logits quadratically (decaying them flattens the
    # attention).
    config.train.responses = "halves"
    config.train.ema_decay = 0.99
    config.optim.neural.weight_decay = 3.0
    config.optim.neural.weight_decay_on = "kernels"
    # The analyses of the demo run on 16 test stimuli with occlusion centres every 4 px: the
    # paper's 280 stimuli at stride 2 take hours on a CPU (benchmarks/README.md); those stay the
    # defaults of the real configs.
    config.analysis.n_images = 16
    config.analysis.occlusion.stride = 4
    config.analysis.attention.samples = 8
    return config
