"""The base configuration of every experiment, with the paper's values as defaults.

Every file in ``dina_jax/configs/`` (``configs/`` in a clone links there) starts from
:func:`get_base_config` and overrides a few fields, so a number lives in exactly one place. Each
field carries a comment with its meaning and, where the paper gives it, the section it comes
from. Fields the paper leaves open say so; the decision is recorded in ``docs/decisions.md``.

:func:`load_config` is the one way to get a config by name or path (the CLI, the notebooks, the
tests, the benchmarks and the experiments all use it); :func:`config_from_json` and
:func:`with_defaults` rebuild the config a run recorded.

Sections: ``data``, ``model`` (``image``, ``neural``, ``vgg16``, ``vit``, ``readout``), ``loss``,
``optim`` (``image``, ``neural``), ``train``, ``eval``, ``figures`` (format and dpi), ``analysis``
(``n_images``, then one block per analysis stage: ``pathways``, ``occlusion``, ``blobs``,
``ablation``, ``attention``, ``validation``).
"""

from __future__ import annotations

import copy
import importlib.util
import json
import math
import os
import pathlib
from typing import Any

import ml_collections

# Shipped inside the package, so every install has them; configs/ at the repository root is a
# link to this folder.
CONFIGS_DIR = pathlib.Path(__file__).resolve().parent / "configs"

# Names of the four natural-image recordings of the public release used as M1..M4 (the paper does
# not say which four it used; we take the first four natural-image recordings of the release).
NATIMG_RECORDINGS = (
    "natimg2800_M160825_MP027_2016-12-14.mat",
    "natimg2800_M161025_MP030_2017-05-29.mat",
    "natimg2800_M170604_MP031_2017-06-28.mat",
    "natimg2800_M170714_MP032_2017-08-07.mat",
)
NATIMG_IMAGES = "images_natimg2800_all.mat"

# Whitened-image recordings (paper Sec. 4.1/4.3: "two mice viewing whitened images"). The release
# has four natimg2800_white recordings, all shown the images file below (name confirmed by the
# release's data description). The two recording names are UNCONFIRMED best guesses (the file list
# could not be checked offline): check the figshare list, override --config.data.recording.
WHITE_RECORDINGS = (
    "natimg2800_white_M170604_MP031_2017-06-29.mat",
    "natimg2800_white_M170714_MP032_2017-08-08.mat",
)
WHITE_IMAGES = "images_natimg2800_white_all.mat"

# Low-dimensional (8D) recordings (paper: "two mice viewing low-dimensional (8D) images"); names
# confirmed from public code that uses the release. The paper does not say which two of the six
# it used: we take two different mice. Each 8D recording has its own images file.
EIGHT_D_RECORDINGS = (
    "natimg2800_8D_M170604_MP031_2017-07-02.mat",
    "natimg2800_8D_M170717_MP033_2017-08-22.mat",
)
EIGHT_D_IMAGES = tuple("images_" + name for name in EIGHT_D_RECORDINGS)


def get_base_config() -> ml_collections.ConfigDict:
    """Returns the paper-default configuration (DINA on one real natural-image recording)."""
    config = ml_collections.ConfigDict()
    config.seed = 0  # Every random choice (split, init, shuffling, analyses) flows from this.
    # XLA's persistent compilation cache, so that a second run compiles nothing: "auto" is
    # <cache folder>/xla (the folder of data.cache_dir), "" switches it off, else a folder.
    config.compilation_cache = "auto"

    # ----------------------------------------------------------------------------- data (Sec. 4.1)
    config.data = data = ml_collections.ConfigDict()
    data.source = "files"  # "files": the user's .mat files; "synthetic": our simulated V1.
    data.dir = "data"  # Folder holding the recording and images files.
    data.recording = NATIMG_RECORDINGS[0]  # Recording file in data.dir (source "files").
    data.images = NATIMG_IMAGES  # Images file in data.dir (source "files").
    data.n_spont_pcs = 32  # Spontaneous PCs projected out of the responses (Stringer et al. 2019).
    data.drop_redcells = True  # Discard GAD+ (red) neurons, as the authors do.
    data.test_fraction = 0.1  # Held-out test images: 280 of 2,800 (Sec. 3.3).
    data.val_fraction = 0.1  # Of the remaining images, the validation split for early stopping.
    # Cache of preprocessed recordings and generated simulated data; "" means
    # <workdir>/../dina_cache, or ~/.cache/dina_jax when there is no workdir.
    data.cache_dir = ""
    # The simulated dataset, used when source == "synthetic" (generated on first use; its file
    # names follow stimset and mouse, see dina_jax/data/synthetic.py).
    data.synthetic = ml_collections.ConfigDict()
    data.synthetic.n_neurons = 2000  # Simulated neurons per mouse.
    data.synthetic.n_images = 2800  # Images, as in the natimg2800 set.
    data.synthetic.n_mice = 1  # Simulated mice (recordings) written.
    data.synthetic.mouse = 0  # Which simulated mouse this run trains on.
    data.synthetic.stimset = "natimg2800"  # "natimg2800", "white" or "8D".
    data.synthetic.format = "v5"  # MATLAB file format written: "v5" or "v73".
    data.synthetic.seed = 0  # Seed of the simulator (independent of config.seed).
    data.synthetic.gain_scale = 1.0  # Multiplies every simulated gain (> 1: stronger signal).
    # Fraction of complex (energy) cells among the visual neurons; layer 2/3 is dominated by
    # them (docs/decisions.md, "Simulated V1"). Other mixes make other simulated mice.
    data.synthetic.frac_complex = 0.8

    # ---------------------------------------------------------------------------- model (Sec. 3)
    config.model = model = ml_collections.ConfigDict()
    model.name = "dina"  # "dina", "vgg16_mlp" or "vit_mlp" (Table 1); see models.MODEL_BUILDERS.
    model.dtype = "float32"  # Compute dtype: "float32" or "bfloat16" (params stay float32).
    model.pretrained_path = ""  # Optional local .npz of image-encoder weights (load_pretrained).
    model.input_hw = (68, 270)  # Stimulus size in pixels (Sec. 4.1).
    # Every image encoder resizes its input to this grid inside the model, so that two stride-2
    # stages (or 4 x 4 patches) give the latent grid.
    model.resize_hw = (64, 256)
    model.latent_hw = (16, 64)  # Feature-map grid of both towers: 1 x 16 x 64 (Sec. 3.1).

    # Each tower's block holds exactly the fields of its module (models/__init__.py builds it as
    # ImageTower(**config.model.image, ...)), so a new field is one line here and one in the module.
    model.image = image = ml_collections.ConfigDict()  # DS-Net-style image tower (Sec. 3.1).
    image.stem_channels = 64  # Stem conv (stride 2) output channels = stage-1 width.
    image.channels = (64, 128)  # C of stage 1 and stage 2 (Sec. 3.1).
    image.depths = (3, 4)  # Dual-stream blocks per stage (Sec. 3.1).
    image.num_heads = (2, 4)  # Attention heads of the global stream / co-attention per stage.
    image.global_pool = 8  # Global stream pools the stage grid by this factor (DESIGN.md).
    image.mlp_ratio = 4  # Hidden width of the block MLP relative to C (DS-Net).
    image.head_hidden = 64  # Hidden width of the per-pixel MLP head 128 -> hidden -> 1.
    image.stem_kernel = 3  # Kernel of the stride-2 stem conv (our choice: overlapping conv stem).
    image.merge_kernel = 2  # Kernel of the stride-2 patch-merging conv (DS-Net patch embedding).
    image.local_kernel = 3  # Depth-wise conv of the local stream, 3 x 3 (Eq. 1).
    # Form of the dual-stream block. "paper": Eq. 1-3 as printed (f_L = DWConv(f_l), f_G = the
    # global self-attention, no norm or residual inside the streams), then DS-Net's co-attention,
    # fusion and MLP. "dsnet": DS-Net's MixBlock in full (a depth-wise position encoding, a 1 x 1
    # split projection, pre-norm residual local and global streams, normed co-attention inputs).
    image.block = "paper"
    image.attention = "auto"  # Global-stream and co-attention implementation (as neural.attention).
    image.block_size = 512  # Max query/key block of the blockwise global and co-attention.
    # Samples pushed through the image tower at a time (same result, cache-sized working set);
    # 0: by backend and size (2 on a CPU when a sample's stage-1 tensor is >= 512 kB, as at the
    # paper's sizes; else the whole batch, and always on GPU/TPU).
    image.micro_batch = 0
    # With micro-batches: recompute each one's activations in the backward pass (memory).
    image.remat = True

    model.neural = neural = ml_collections.ConfigDict()  # Neural tower (Sec. 3.2).
    neural.d_model = 32  # Neuron embedding width d_model (Eq. 4).
    neural.mlp_hidden = 1024  # Hidden width of the readout MLP N -> hidden -> 1024.
    neural.num_heads = 1  # Heads of the population attention; Eq. 7 is a single head.
    # Add each neuron's embedding to its attention output (a transformer skip). The paper prints
    # Eq. 7 without one, and no config adds it: with it the demo's attention went uniform and
    # decoding ran through the skip, a readout (docs/decisions.md, issue 13).
    neural.residual = False
    # How the population attention weights the neurons: "softmax" (Eq. 7), "uniform" (every kept
    # neuron 1/N) or "none" (no attention output): the last two are controls that measure what
    # the attention scores and the attention contribute (analysis.attention_contribution).
    neural.mixer = "softmax"
    # Population attention: "auto" (cuDNN flash on GPU when it applies, else "compact" for logits
    # of at most 4 MB per call, else blockwise), "blockwise" (O(N) memory online softmax),
    # "compact" (materialized, hand-written backward), "materialized" (plain N x N), "cudnn".
    neural.attention = "auto"
    neural.block_size = 512  # Max query/key block of the blockwise population attention.
    # Initialization scales (the paper gives none): w^emb ~ N(0, embedding_init_std^2), and
    # W_Q, W_K LeCun-normal times qk_init_scale (0 starts the attention exactly uniform).
    neural.embedding_init_std = 1.0
    neural.qk_init_scale = 1.0

    # Table 1 baselines: a VGG-16 or ViT image encoder with an MLP neural readout.
    model.vgg16 = vgg16 = ml_collections.ConfigDict()
    vgg16.widths = (64, 128, 256, 512, 512)  # VGG-16 block widths.
    vgg16.depths = (2, 2, 3, 3, 3)  # VGG-16 convolutions per block (13 in all).
    vgg16.pooled_blocks = 2  # Max-pool after the first 2 blocks only: 64 x 256 -> 16 x 64.
    vgg16.head_hidden = 64  # Hidden width of the per-pixel head C -> hidden -> 1.
    model.vit = vit = ml_collections.ConfigDict()
    vit.patch = (4, 4)  # Patch size on the resized 64 x 256 input (16 x 64 tokens).
    vit.dim = 192  # Token width.
    vit.depth = 6  # Encoder blocks.
    vit.num_heads = 3  # Attention heads.
    vit.mlp_ratio = 4  # MLP hidden width relative to dim.
    vit.head_hidden = 64  # Hidden width of the per-token head dim -> hidden -> 1.
    vit.attention = "auto"  # Attention implementation (as neural.attention).
    vit.block_size = 512  # Max query/key block of the blockwise attention.
    model.readout = ml_collections.ConfigDict()  # The baselines' MLP neural readout.
    model.readout.mlp_hidden = 1024  # Hidden width N -> hidden -> 1024.

    # ----------------------------------------------------------------------------- loss (Sec. 3.3)
    config.loss = ml_collections.ConfigDict()
    config.loss.temperature = 0.01  # Fixed InfoNCE temperature (Sec. 3.3).
    # Not in the paper: InfoNCE on batch-centred neural maps (the normalized maps minus their
    # batch mean), against a pattern shared by every neural map making one image the top-1 of
    # most neural queries (docs/decisions.md, "hubs").
    config.loss.centre_neural = False

    # ------------------------------------------------------------------------ optimizer (Sec. 3.3)
    # The paper names the optimizers but gives no learning rates; see docs/decisions.md. Each
    # block names its optimizer (dina_jax/training/optim.py, OPTIMIZERS) and holds the schedule
    # and the optimizer's options; options the named optimizer does not take are ignored.
    config.optim = optim = ml_collections.ConfigDict()
    optim.image = ml_collections.ConfigDict()  # The image tower.
    optim.image.name = "adamw"  # AdamW (Sec. 3.3).
    # The paper gives no rates. DESIGN.md's starting point (AdamW 1e-4, RMSprop 1e-5, 2 warmup
    # epochs) leaves the paper's model at chance on simulated mice in the steps of 100 epochs;
    # these rates (the demo's) train it: docs/decisions.md, "The real configs' learning rates".
    optim.image.learning_rate = 2e-3  # Peak learning rate after warmup.
    optim.image.weight_decay = 0.05  # Decoupled weight decay.
    optim.image.weight_decay_on = "all"  # Leaves it acts on: "all" or "kernels" (see neural).
    optim.image.b1 = 0.9  # Adam beta1.
    optim.image.b2 = 0.999  # Adam beta2.
    optim.image.eps = 1e-8  # Adam epsilon (added outside the square root, as in PyTorch).
    optim.image.warmup_epochs = 0.5  # Linear warmup length, then cosine decay to end_factor.
    optim.image.end_factor = 0.01  # Final learning rate as a fraction of the peak.
    optim.image.clip_norm = 1.0  # Global gradient-norm clipping of this tower (0 disables).
    optim.neural = ml_collections.ConfigDict()  # The neural tower.
    optim.neural.name = "rmsprop"  # RMSprop (Sec. 3.3).
    optim.neural.learning_rate = 1e-3  # Peak learning rate after warmup.
    optim.neural.decay = 0.99  # RMSprop squared-gradient decay (PyTorch's default alpha).
    optim.neural.eps = 1e-8  # RMSprop epsilon.
    optim.neural.eps_in_sqrt = False  # False: g / (sqrt(nu) + eps), as PyTorch's RMSprop.
    optim.neural.momentum = 0.0  # RMSprop momentum.
    optim.neural.weight_decay = 0.0  # Decoupled weight decay (x lr), as AdamW's; paper: none.
    # Leaves it acts on: "all" (as AdamW on the image tower), "kernels" (weight matrices only;
    # not the per-neuron embedding and aggregation vectors or the biases) or "readout" (the
    # weight matrices outside the population attention: the readout MLP's).
    optim.neural.weight_decay_on = "all"
    optim.neural.warmup_epochs = 0.5  # Linear warmup length, then cosine decay.
    optim.neural.end_factor = 0.01  # Final learning rate as a fraction of the peak.
    optim.neural.clip_norm = 1.0  # Global gradient-norm clipping of this tower (0 disables).

    # ----------------------------------------------------------------------------- train (Sec. 3.3)
    config.train = train = ml_collections.ConfigDict()
    train.batch_size = 128  # Global batch (all devices together), Sec. 3.3.
    train.num_epochs = 100  # Fixed epoch budget.
    # Training responses: "mean" over all repeats of each image (the paper's stimulus-averaged
    # matrix, Sec. 4.1) or "halves": each example draws, every epoch, the mean over one half of the
    # repeats (two noisier views of the same stimulus; validation and test always use "mean").
    train.responses = "mean"
    # Neuron dropout on the training responses: each (example, neuron) entry is zeroed with this
    # probability and the rest scaled by 1 / (1 - p). The paper mentions no dropout: 0.
    train.neuron_dropout = 0.0
    # Exponential moving average of the parameters (decay per step; 0 = none, as in the paper).
    # When > 0, validation, early stopping, the `best` checkpoint and every analysis use the EMA.
    train.ema_decay = 0.0
    train.patience = 15  # Early stopping: epochs without a better validation loss.
    train.log_every = 10  # Log training metrics every this many steps (step 1 included).
    # Inside an epoch `latest` is also saved every this many minutes (and, if > 0, every this
    # many steps), so that a kill loses at most that much work; every save costs steps after it
    # too (demo: 10% of an epoch's rate at one save per epoch, benchmarks/README.md), so the
    # short epochs of the demo are saved only at their end. 0 turns either off.
    train.checkpoint_every_minutes = 10.0
    train.checkpoint_every_steps = 0
    train.distributed = False  # Call jax.distributed.initialize() (multi-host TPU/GPU).
    train.evaluate_at_end = True  # Run evaluation.evaluate on the best checkpoint after training.

    # ------------------------------------------------------------------- evaluation (Sec. 4.2–4.3)
    config.eval = ev = ml_collections.ConfigDict()
    ev.topk = (1, 5, 10)  # Retrieval accuracies reported (Table 1).
    ev.batch_size = 128  # Encoding batch for evaluation.
    ev.lpips_weights = ""  # Local LPIPS weights file; "" reports "weights not provided".
    ev.ssim_win_size = 7  # SSIM window between paired feature maps (Sec. 4.3).
    ev.n_example_stimuli = 6  # Stimuli shown in the Fig. 4a / A.2 / Fig. 3 panels.
    ev.ridge_alphas = (1e-1, 1.0, 1e1, 1e2, 1e3, 1e4, 1e5)  # Linear baseline regularization grid.
    ev.ridge_n_pcs = 100  # Linear baseline: pixel PCs of the images it predicts.
    ev.lpips_resize_hw = (64, 256)  # Maps are resized to this before the LPIPS AlexNet trunk.
    ev.spectrum_fit_range = (10, 100)  # PC ranks of the power-law fit (Fig. 4b; see spectra.py).
    ev.n_retrieved = 5  # Retrieved images shown per neural query (Fig. 3: top-5).

    # ------------------------------------------------------- figures (evaluation and analyses)
    config.figures = ml_collections.ConfigDict()
    config.figures.format = "png"  # File format of workdir/figures/*: "png", "pdf" or "svg".
    config.figures.dpi = 120  # Resolution of raster output (PNG; images inside PDF/SVG).

    # ------------------------------------------------------------------ analyses (Sec. 4.4–4.5, A)
    # One block per analysis stage (dina_jax/analysis/stages.py). A stage's stored results are
    # keyed by its block (and the stimuli), so changing a field recomputes that stage and the
    # stages built on it, and nothing else.
    config.analysis = an = ml_collections.ConfigDict()
    an.n_images = 280  # Test stimuli analysed (all of them by default).

    an.pathways = ml_collections.ConfigDict()  # Pathway masking (Sec. 4.4, Fig. 5a).
    an.pathways.ssim_window = 7  # SSIM window, pathway-masked vs full feature map (Fig. 5a).

    an.occlusion = occlusion = ml_collections.ConfigDict()  # Gaussian occlusion (App. A.1).
    occlusion.sigma = 4.0  # Gaussian occluder sigma in pixels (App. A.1).
    occlusion.stride = 2  # Grid stride of occlusion centres (App. A.1).
    occlusion.alpha = 1.0  # Occlusion strength alpha (Eq. 11).
    occlusion.measure = "ssim"  # "ssim" (Eq. 13, used in Sec. 4.4) or "cos" (Eq. 12).
    occlusion.ssim_window = 3  # SSIM window on the feature maps (App. A.1).
    occlusion.repeats = 5  # N = 5 repeats; a deterministic model is evaluated once.
    # Occluded images per compiled chunk (memory); 0 = auto: 256 on GPU/TPU, 8 on CPU (where the
    # cost per image does not fall with the batch and large batches fall out of cache).
    occlusion.batch = 0

    an.blobs = blobs = ml_collections.ConfigDict()  # Blobs and shape descriptors (App. A.2-A.3).
    blobs.threshold = 0.6  # Blob iso-level of the normalized RF map (Eq. 16).
    # Tex(T) sensitivity alpha (Eq. 20); not in the paper: ln 2 / (sqrt 2 - 1), Tex(sqrt 2) = 1/2.
    blobs.tex_alpha = 1.6734
    blobs.orientation = "axial"  # Eq. 18 on e^{2i theta} ("axial") or literal e^{i theta}.
    blobs.min_segment_length = 3.0  # Shortest skeleton segment (px) used for T and R (App. A.2).
    # Sobel edges: Otsu per blob ("blob_otsu") or "image_otsu".
    blobs.edge_binarization = "blob_otsu"

    an.ablation = ablation = ml_collections.ConfigDict()  # Neuron ablation (Sec. 4.5, Fig. 6a).
    # Neuron subset sizes as fractions of the population (Fig. 6a).
    ablation.fractions = (0.01, 0.02, 0.05, 0.08, 0.1, 0.12, 0.15, 0.2, 0.3, 0.5, 0.7, 1.0)
    ablation.random_draws = 10  # Random subsets per size (Sec. 4.5).
    ablation.ssim_target = 0.9  # SSIM the subsets must reach (Sec. 4.5).
    ablation.ssim_window = 7  # SSIM window, subset vs full-population neural map (Fig. 6a).
    ablation.mask_batch = 8  # Neuron masks evaluated together in one vmapped call (memory).

    an.attention = attention = ml_collections.ConfigDict()  # Attention scores (Fig. 6b).
    attention.bins = 200  # Log-spaced histogram bins of attention scores (Fig. 6b).
    attention.samples = 32  # Test stimuli whose attention maps are streamed (Fig. 6b).

    # What the attention contributes (not in the paper; Fig. 6 presupposes it): retrieval over
    # all test stimuli and map SSIM with the attention made uniform or removed, and its spread.
    an.attention_contribution = contribution = ml_collections.ConfigDict()
    contribution.samples = 32  # Test stimuli whose attention spread is measured.
    contribution.ssim_window = 7  # SSIM window, control vs intact neural map.
    contribution.batch_size = 64  # Stimuli per compiled encoding call (memory).

    # Checks against the simulator's ground truth (simulated data only; dina_jax/analysis/
    # validation.py).
    an.validation = ml_collections.ConfigDict()
    an.validation.gain_quantile = 0.9  # "High-gain" = visual, gain above this quantile.
    return config


# ------------------------------------------------------------------------------ loading


class ConfigError(ValueError):
    """A config value that cannot work; the message is one line: what, and how to fix it."""


DATA_SOURCES = ("files", "synthetic")
DTYPES = ("float32", "bfloat16")
IMAGE_BLOCKS = ("paper", "dsnet")  # models/image_tower.py: the dual-stream block's forms
# models/attention.py: the implementations of dot_product_attention.
ATTENTIONS = ("auto", "materialized", "compact", "blockwise", "cudnn")


def check_config(config: ml_collections.ConfigDict) -> None:
    """Raises :class:`ConfigError` for a value no run can use, before anything is loaded.

    Checks what a typo or a sign error can break: data source, split fractions, the
    temperature, batch sizes, epoch and step counts (the training options that need the
    optimizers or the devices are checked by ``training.loop.check_train_options``).
    """

    def require(ok: bool, key: str, problem: str, fix: str) -> None:
        if not ok:
            value = config
            for part in key.split("."):
                value = value[part]
            raise ConfigError(f"{key}={value!r} {problem} ({fix})")

    def positive_int(key: str, fix: str) -> None:
        value = config
        for part in key.split("."):
            value = value[part]
        require(isinstance(value, int) and value >= 1, key, "must be a positive integer", fix)

    data = config.data
    require(
        data.source in DATA_SOURCES,
        "data.source",
        f"is not one of {DATA_SOURCES}",
        "set --config.data.source=files for the .mat files or =synthetic",
    )
    require(
        0.0 < float(data.test_fraction) < 1.0,
        "data.test_fraction",
        "must be in (0, 1)",
        "the paper holds out 0.1",
    )
    require(
        0.0 <= float(data.val_fraction) < 1.0,
        "data.val_fraction",
        "must be in [0, 1)",
        "the default is 0.1",
    )
    require(
        int(data.n_spont_pcs) >= 0, "data.n_spont_pcs", "must be >= 0", "32 as the authors, or 0"
    )
    require(config.model.dtype in DTYPES, "model.dtype", f"is not one of {DTYPES}", "use float32")
    require(
        config.model.image.block in IMAGE_BLOCKS,
        "model.image.block",
        f"is not one of {IMAGE_BLOCKS}",
        "paper: Eq. 1-3 as printed; dsnet: DS-Net's full block",
    )
    for tower in ("image", "neural", "vit"):
        require(
            config.model[tower].attention in ATTENTIONS,
            f"model.{tower}.attention",
            f"is not one of {ATTENTIONS}",
            "auto picks the fastest exact one",
        )
    temperature = float(config.loss.temperature)
    require(
        temperature > 0.0 and temperature == temperature and temperature != float("inf"),
        "loss.temperature",
        "must be a positive number",
        "the paper uses 0.01",
    )
    positive_int("train.batch_size", "the paper uses 128")
    positive_int("train.num_epochs", "e.g. 100")
    positive_int("train.patience", "e.g. 15")
    positive_int("train.log_every", "e.g. 10")
    require(
        isinstance(config.train.checkpoint_every_steps, int)
        and config.train.checkpoint_every_steps >= 0,
        "train.checkpoint_every_steps",
        "must be a whole number >= 0",
        "0 saves by time alone",
    )
    minutes = float(config.train.checkpoint_every_minutes)
    require(
        minutes >= 0.0 and math.isfinite(minutes),
        "train.checkpoint_every_minutes",
        "must be a number >= 0",
        "e.g. 10; 0 saves by steps alone",
    )
    positive_int("eval.batch_size", "e.g. 128")
    positive_int("analysis.n_images", "280 analyses every test stimulus")


def available_configs() -> list[str]:
    """Names accepted by :func:`load_config`: ``"base"`` and every ``configs/<name>.py``."""
    found = sorted(p.stem for p in CONFIGS_DIR.glob("*.py") if not p.stem.startswith("_"))
    return ["base", *found]


def config_path(name_or_path: str | os.PathLike) -> pathlib.Path:
    """The file of a config name (``"m1"``) or path; ``configs/<name>.py`` that does not exist
    from the current folder (an installed package, a checkout without symbolic links) is the
    packaged ``dina_jax/configs/<name>.py``. The path is returned even when no file is there."""
    text = os.fspath(name_or_path)
    if not (text.endswith(".py") or os.sep in text or "/" in text):
        return CONFIGS_DIR / f"{text}.py"
    path = pathlib.Path(text).expanduser()
    packaged = CONFIGS_DIR / path.name
    if not path.exists() and path.parent == pathlib.Path("configs") and packaged.is_file():
        return packaged
    return path


def _config_file(name_or_path: str | os.PathLike) -> pathlib.Path:
    path = config_path(name_or_path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no such config file; load_config takes a path or one of "
            f"{', '.join(available_configs())}"
        )
    return path


def apply_overrides(config: ml_collections.ConfigDict, overrides: dict[str, Any]) -> None:
    """Sets dotted fields in place: ``{"train.num_epochs": 5, "data.dir": "/data"}``.

    Unlike ``ConfigDict.update_from_flattened_dict`` an unknown key is an error, so a typo never
    goes unnoticed; values are type-checked by the ConfigDict (an int into a float field is fine).
    """
    for key, value in overrides.items():
        *parents, leaf = key.split(".")
        node = config
        for part in parents:
            if part not in node or not isinstance(node[part], ml_collections.ConfigDict):
                raise KeyError(f"config override {key!r}: no section {part!r}")
            node = node[part]
        if leaf not in node:
            raise KeyError(f"config override {key!r}: no field {leaf!r} (see dina_jax/config.py)")
        node[leaf] = tuple(value) if isinstance(value, list) else value


def load_config(
    name_or_path: str | os.PathLike = "synthetic", overrides: dict[str, Any] | None = None
) -> ml_collections.ConfigDict:
    """The ConfigDict of ``configs/<name>.py`` (or of any config file), with overrides applied.

    The same object the command line builds from ``--config FILE --config.a.b=value``. The
    paper's numbers (Sec. 3-4, App. A-B) are the defaults of ``"base"``.

    Args:
      name_or_path: a config name (``"synthetic"``, ``"m1"``, ``"tiny"``, ... see
        :func:`available_configs`; ``"base"`` is :func:`get_base_config`, the paper's defaults)
        or the path of a file defining ``get_config()``.
      overrides: dotted field -> value, e.g. ``{"train.num_epochs": 5}``; lists become tuples.

    Returns:
      A fresh, unlocked ``ml_collections.ConfigDict``.

    Raises:
      FileNotFoundError: no such config; KeyError: an override names no field.

    Example::

        config = dina_jax.load_config("m1", {"data.dir": "/content/drive/MyDrive/stringer"})
        config.train.batch_size          # 128: the global batch over all devices
    """
    if os.fspath(name_or_path) == "base":
        config = get_base_config()
    else:
        path = _config_file(name_or_path)
        spec = importlib.util.spec_from_file_location(f"dina_jax_config_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        config = module.get_config()
    apply_overrides(config, overrides or {})
    return config


def config_from_json(data: dict | str) -> ml_collections.ConfigDict:
    """Rebuilds a ConfigDict from its JSON form; JSON lists become tuples again."""
    if isinstance(data, str):
        data = json.loads(data)

    def convert(value):
        if isinstance(value, dict):
            return {k: convert(v) for k, v in value.items()}
        if isinstance(value, list):
            return tuple(convert(v) for v in value)
        return value

    return ml_collections.ConfigDict(convert(data))


# The flat ``analysis`` fields of runs configured before the per-stage blocks: old name ->
# "block.field". ``with_defaults`` moves them into their blocks, so the
# config.json of an older run keeps its analysis settings (e.g. the demo's occlusion stride 4).
LEGACY_ANALYSIS_FIELDS = {
    "pathway_ssim_window": "pathways.ssim_window",
    "occlusion_sigma": "occlusion.sigma",
    "occlusion_stride": "occlusion.stride",
    "occlusion_alpha": "occlusion.alpha",
    "occlusion_measure": "occlusion.measure",
    "occlusion_ssim_window": "occlusion.ssim_window",
    "occlusion_repeats": "occlusion.repeats",
    "occlusion_batch": "occlusion.batch",
    "blob_threshold": "blobs.threshold",
    "tex_alpha": "blobs.tex_alpha",
    "orientation": "blobs.orientation",
    "min_segment_length": "blobs.min_segment_length",
    "edge_binarization": "blobs.edge_binarization",
    "ablation_fractions": "ablation.fractions",
    "ablation_random_draws": "ablation.random_draws",
    "ablation_ssim_target": "ablation.ssim_target",
    "ablation_ssim_window": "ablation.ssim_window",
    "ablation_mask_batch": "ablation.mask_batch",
    "attention_bins": "attention.bins",
    "attention_samples": "attention.samples",
    "ablation_gain_quantile": "validation.gain_quantile",
}


def with_defaults(config: ml_collections.ConfigDict | dict) -> ml_collections.ConfigDict:
    """The base config updated with ``config`` (recursively): fields added to the code after a run
    was trained take their defaults, so older runs stay loadable.

    A ``model.image`` without ``block`` was written when DS-Net's block was the only form: it
    keeps ``"dsnet"`` rather than the newer default. The flat ``analysis`` fields of older
    configs (``analysis.occlusion_stride``, ...) move to their per-stage blocks
    (``analysis.occlusion.stride``; :data:`LEGACY_ANALYSIS_FIELDS`).
    """
    values = copy.deepcopy(config.to_dict() if hasattr(config, "to_dict") else config)
    analysis = values.get("analysis", {})
    for old, new in LEGACY_ANALYSIS_FIELDS.items():
        if old in analysis:
            block, field = new.split(".")
            analysis.setdefault(block, {})[field] = analysis.pop(old)
    image = values.get("model", {}).get("image")
    if isinstance(image, dict) and "block" not in image:
        image["block"] = "dsnet"  # the only block form before model.image.block existed
    merged = get_base_config()
    merged.update(values)
    return merged
