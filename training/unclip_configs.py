"""What ``unclip_train.py`` can be told, one config dataclass per stage.

Every stage is trained by the same loop (``training.diffusion_trainer``), so the
options of the loop live in ``DiffusionTrainingConfig``; each stage's config adds
its network's options and states its own defaults, tuned so that it trains in
minutes on a 2-core CPU (BENCHMARKS.md says how they were chosen):

    stage      config                          steps  minutes  batch  lr     min-SNR  timesteps        EMA
    decoder    DecoderTrainingConfig           4000   11       32     2e-3   off      Laplace(2, 1.5)  0.995
    superres   SuperResolutionTrainingConfig   4000   6        32     2e-3   5        Laplace(2, 1.5)  0.995
    prior      PriorTrainingConfig             5000   4        256    1e-3   5        uniform          0.998

The flags are these fields (``utils.cli``); ``unclip_train.py --stage prior --help``
lists the prior's. Each ``validate`` checks the values as flags, before any work.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import ClassVar

from dataloading.style_captions import CAPTION_STYLES
from models.diffusion import LAPLACE_MEAN, LAPLACE_SCALE, PREDICTIONS, SCHEDULES, TIMESTEP_DENSITIES, UNIFORM_SHARE
from models.pipeline import default_checkpoint_name
from models.pixel_space import LOGIT_DELTA, PIXEL_SPACES
from training.presets import preset_option
from utils.config import option, override
from utils.errors import require
from utils.files import check_output_file, check_output_folder

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune-no-cudagraphs")  # torch.compile's modes


@dataclass
class DiffusionTrainingConfig:
    """The training loop's options, shared by every stage; the defaults are the decoder's."""

    stage: ClassVar[str]
    clip_model_path: str = option("checkpoints/clip.pt", "the trained CLIP checkpoint (frozen)")
    steps: int = option(4000, "training steps at most")
    max_minutes: float = option(11.0, "training minutes at most, 0: no limit; the learning-rate schedule follows whichever limit comes first")
    batch_size: int = option(32, "samples per step, over all processes under torchrun")
    lr: float = option(2e-3, "peak learning rate, linear warm-up then cosine decay")
    adam_beta2: float = option(0.999, "AdamW's beta2, the second-moment decay (EDM2 uses 0.99)")
    warmup_steps: int = option(100, "learning-rate warm-up steps")
    # 0.995 against the 0.998 of before: a two-sample test as good or better and the Frechet ratio lower at both seeds (BENCHMARKS.md, "EMA length")
    ema_decay: float = option(0.995, "decay of the exponential moving average used for sampling; it is warmed up as min(decay, (1+n)/(10+n)) "
                                     "after n steps, so 0.998 is only reached after 4,490 steps and any decay above 0.9978 acts the same at 4,000")
    extra_ema_decays: list[float] | None = option(None, "also keep EMAs with these decays and write each beside the checkpoint as "
                                                        "<name>_ema<decay>.pt, to score EMA lengths after one run (EDM2, Karras et al. 2024); "
                                                        "0 keeps the last weights themselves, unaveraged")
    cond_drop_prob: float = option(0.15, "probability of dropping the conditioning (for classifier-free guidance)")
    schedule: str = option("cosine", "noise schedule", choices=list(SCHEDULES))
    # Laplace toward low noise: the two-sample test at 0.64-0.67 against 0.73-0.77 for uniform t, over two seeds (BENCHMARKS.md)
    timestep_density: str = option("laplace", "how training timesteps are drawn: uniform, or laplace (log-SNR ~ Laplace(--laplace_mean, --laplace_scale), "
                                              "a share --uniform_share uniform; Hang et al. 2024)", choices=list(TIMESTEP_DENSITIES))
    laplace_mean: float = option(LAPLACE_MEAN, "--timestep_density laplace: the Laplace density's centre in log-SNR (positive: toward low noise)")
    laplace_scale: float = option(LAPLACE_SCALE, "--timestep_density laplace: the Laplace density's scale over log-SNR (larger: closer to uniform)")
    uniform_share: float = option(UNIFORM_SHARE, "--timestep_density laplace: the share of each batch still drawn uniformly, so both ends stay trained")
    prediction: str = option("v", "what the network predicts", choices=list(PREDICTIONS))
    # The decoder's loss is unweighted: min-SNR-5 scaled its low-noise steps down and left grain in its samples (BENCHMARKS.md, "The decoder's loss").
    min_snr_gamma: float = option(0.0, "min-SNR loss weighting gamma, 0: off")
    dataset: str | None = option(None, "mnist or fashion (default: the CLIP checkpoint's)")
    captions: str = option("class", "class: captions name the class (\"a handwritten six\"); style: also how it is drawn, by measured thickness, slant and width (\"a thick six slanted left\")", choices=list(CAPTION_STYLES))
    data_dir: str | None = option(None, "folder with IDX files (default: the CLIP checkpoint's)")
    train_subset: int = option(0, "train on only this many images (0: all), for quick tests")
    sample_every: int = option(1000, "write a sample grid every N steps (0: only at the end)")
    save_every: int = option(250, "write the checkpoint every N steps")
    seed: int = option(0, "random seed")
    device: str = option("auto", "auto, cpu or cuda")
    preset: str = preset_option()
    compile: bool | None = option(None, "torch.compile the network (default: on CUDA only, where it pays; its first step is not "
                                        "counted in --max_minutes)")
    compile_mode: str = option("default", "torch.compile's mode: reduce-overhead replays the network's kernels as one CUDA graph "
                                          "(for steps bound by launching kernels, not by running them)", choices=list(COMPILE_MODES))
    save_path: str | None = option(None, "checkpoint path, metrics beside it as .json (default: checkpoints/<stage name>.pt, e.g. "
                                         "decoder, decoder_image, decoder_14px, superres, prior)")
    output_dir: str | None = option(None, "folder for sample grids and plots (default: outputs/<checkpoint name>)")
    resume: bool = option(False, "continue from the checkpoint at --save_path")
    init_from: str | None = option(None, "start from the EMA weights of this checkpoint or shipped .safetensors (same stage, model and CLIP) "
                                         "with a fresh optimizer, EMAs and learning-rate schedule: a warm restart or a fine-tune. "
                                         "A checkpoint that --resume finds at --save_path takes precedence")

    def __post_init__(self) -> None:
        if self.save_path is None:
            self.save_path = f"checkpoints/{self.checkpoint_name()}.pt"
        if self.output_dir is None:
            self.output_dir = f"outputs/{Path(self.save_path).stem}"

    def checkpoint_name(self) -> str:
        return default_checkpoint_name(self.stage)

    def to_dict(self) -> dict:
        """What the checkpoint and the metrics file record: every field, and the stage."""
        return {"stage": self.stage, **asdict(self)}

    def validate(self) -> None:
        require(self.steps > 0, f"--steps must be positive, got {self.steps}")
        require(self.max_minutes >= 0, f"--max_minutes must be 0 (no limit) or positive, got {self.max_minutes}")
        require(self.batch_size > 0, f"--batch_size must be positive, got {self.batch_size}")
        require(self.lr > 0, f"--lr must be positive, got {self.lr}")
        require(0 < self.adam_beta2 < 1, f"--adam_beta2 must be in (0, 1), got {self.adam_beta2}")
        require(self.warmup_steps >= 0, f"--warmup_steps must be 0 or positive, got {self.warmup_steps}")
        require(0 <= self.cond_drop_prob < 1, f"--cond_drop_prob must be in [0, 1), got {self.cond_drop_prob}")
        require(0 < self.ema_decay < 1, f"--ema_decay must be in (0, 1), got {self.ema_decay}")
        for decay in self.extra_ema_decays or []:
            require(0 <= decay < 1 and decay != self.ema_decay, f"--extra_ema_decays must be in [0, 1) and differ from --ema_decay, got {decay}")
        require(self.laplace_scale > 0 and 0 <= self.uniform_share <= 1, "--laplace_scale must be positive and --uniform_share in [0, 1]")
        require(self.min_snr_gamma >= 0, f"--min_snr_gamma must be 0 (off) or positive, got {self.min_snr_gamma}")
        require(self.train_subset >= 0, f"--train_subset must be 0 or positive, got {self.train_subset}")
        require(self.save_every > 0 and self.sample_every >= 0, "--save_every must be positive and --sample_every 0 or positive")
        check_output_file(self.save_path, "--save_path")
        check_output_folder(self.output_dir, "--output_dir")


@dataclass
class UNetStageConfig(DiffusionTrainingConfig):
    """What the decoder and the super-resolution model share: a UNet on CLIP conditioning."""

    condition: str = option("text", "condition on CLIP text embeddings of the caption, or CLIP image embeddings of the image (unCLIP)",
                            choices=["text", "image"])
    cross_attention: bool = option(False, "also cross-attend to CLIP's per-token text states (text condition only)")
    channels: str = option("32,48,64", "UNet channels per level, comma separated; level 0 runs at half resolution")
    blocks_per_level: int = option(1, "residual blocks per UNet level")
    full_res_channels: int = option(0, "channels of a small residual refinement at full resolution after the UNet (0: none)")
    dropout: float = option(0.0, "dropout inside the UNet's residual blocks while training (DDPM: 0.1 on CIFAR-10); a regulariser for "
                                 "long runs on few images (BENCHMARKS.md, nineteenth session: the decoder starts to learn its training images)")
    # logit: the two-sample test tells the 4,000-step decoder's digits from real ones at 0.70 instead of 0.95 (BENCHMARKS.md, "What gives the pictures away")
    pixel_space: str = option("logit", "where the diffusion runs: logit (black and full ink stretched, models/pixel_space.py) or linear pixels",
                              choices=list(PIXEL_SPACES))
    logit_delta: float = option(LOGIT_DELTA, "the logit space's distance from 0 and 1: smaller stretches black and full ink further")

    def channel_tuple(self) -> tuple[int, ...]:
        try:
            channels = tuple(int(c) for c in self.channels.split(","))
        except ValueError:
            channels = ()
        require(len(channels) >= 1 and all(c > 0 and c % 4 == 0 for c in channels), f"--channels must be positive multiples of 4, e.g. 32,48,64; got {self.channels!r}")
        return channels

    def checkpoint_name(self) -> str:
        return default_checkpoint_name(self.stage, self.condition)

    def validate(self) -> None:
        super().validate()
        self.channel_tuple()
        require(self.blocks_per_level > 0, f"--blocks_per_level must be positive, got {self.blocks_per_level}")
        require(0 < self.logit_delta < 0.5, f"--logit_delta must lie between 0 and 0.5, got {self.logit_delta}")
        require(self.full_res_channels >= 0, f"--full_res_channels must be 0 or positive, got {self.full_res_channels}")
        require(0 <= self.dropout < 1, f"--dropout must be at least 0 and below 1, got {self.dropout}")
        require(not (self.cross_attention and self.condition == "image"), "--cross_attention needs --condition text (images have no tokens)")


@dataclass
class DecoderTrainingConfig(UNetStageConfig):
    """CLIP embedding -> image."""

    stage: ClassVar[str] = "decoder"
    resolution: int = option(0, "train at this image size, e.g. 14 for the base of a cascade (0: the data's own size)")
    embedding_noise: float = option(0.0, "--condition image: add Gaussian noise of this norm to each training image embedding "
                                         "(then renormalise), so the decoder also learns the space between its 4,500 training embeddings")
    embedding_augmentation: bool = option(False, "--condition image: condition on the CLIP embedding of a randomly rotated, scaled and "
                                                 "shifted copy of the training image (CLIP's own augmentation), so held-out images' embeddings "
                                                 "look like training ones")

    def checkpoint_name(self) -> str:
        return default_checkpoint_name(self.stage, self.condition, self.resolution)

    def validate(self) -> None:
        super().validate()
        require(self.resolution >= 0, f"--resolution must be 0 (the data's size) or positive, got {self.resolution}")
        require(self.embedding_noise >= 0, f"--embedding_noise must be 0 or positive, got {self.embedding_noise}")
        require(not (self.embedding_noise and self.condition != "image"), "--embedding_noise needs --condition image (it noises CLIP image embeddings)")
        require(not (self.embedding_augmentation and self.condition != "image"), "--embedding_augmentation needs --condition image")


@dataclass
class SuperResolutionTrainingConfig(UNetStageConfig):
    """CLIP embedding + a low-resolution image -> the full-size image (Imagen's cascade)."""

    stage: ClassVar[str] = "superres"
    max_minutes: float = override(UNetStageConfig, "max_minutes", 6.0)
    min_snr_gamma: float = override(UNetStageConfig, "min_snr_gamma", 5.0)
    channels: str = override(UNetStageConfig, "channels", "32,48")
    low_res_size: int = option(14, "the size of the low-resolution images it upscales")
    max_augmentation_level: float = option(0.5, "the low-res condition is noised to a level drawn uniformly from [0, this] "
                                                "(Imagen's Gaussian conditioning augmentation; 0: off)")

    def validate(self) -> None:
        super().validate()
        require(self.low_res_size > 0, f"--low_res_size must be positive, got {self.low_res_size}")
        require(0 <= self.max_augmentation_level <= 1, f"--max_augmentation_level must be in [0, 1], got {self.max_augmentation_level}")


@dataclass
class PriorTrainingConfig(DiffusionTrainingConfig):
    """CLIP text embedding -> CLIP image embedding (DALL-E 2's prior)."""

    stage: ClassVar[str] = "prior"
    steps: int = override(DiffusionTrainingConfig, "steps", 5000)
    max_minutes: float = override(DiffusionTrainingConfig, "max_minutes", 4.0)
    batch_size: int = override(DiffusionTrainingConfig, "batch_size", 256)
    lr: float = override(DiffusionTrainingConfig, "lr", 1e-3)
    # v with min-SNR: DALL-E 2's x0 target made the samples crowd near each class mean here (BENCHMARKS.md, "unCLIP: the diffusion prior").
    min_snr_gamma: float = override(DiffusionTrainingConfig, "min_snr_gamma", 5.0)
    # The pixel stages' density and EMA were chosen on pixel statistics; the prior draws embeddings and keeps what it was measured with.
    timestep_density: str = override(DiffusionTrainingConfig, "timestep_density", "uniform")
    ema_decay: float = override(DiffusionTrainingConfig, "ema_decay", 0.998)
    prior_width: int = option(128, "Transformer width")
    prior_depth: int = option(4, "Transformer layers")
    prior_tokens: bool = option(False, "also attend to the text token states, as DALL-E 2 does (several times slower on a CPU)")

    def validate(self) -> None:
        super().validate()
        require(self.prior_width > 0 and self.prior_width % 4 == 0 and self.prior_depth > 0,
                "--prior_width must be a positive multiple of 4 and --prior_depth positive")


STAGE_CONFIGS: dict[str, type[DiffusionTrainingConfig]] = {
    config.stage: config for config in (DecoderTrainingConfig, PriorTrainingConfig, SuperResolutionTrainingConfig)}
