"""Glue between CLIP and the diffusion stages: conditioning, checkpoints, generation.

    prompts --ClipConditioner.text--> Conditioning --Decoder.generate--> images [N, C, H, W] in [-1, 1]

Everything a script, a benchmark or the notebook needs to turn a prompt into
pixels lives here, so none of them carries its own copy.
"""
from __future__ import annotations

import hashlib
import warnings
from dataclasses import asdict, dataclass, field
from typing import Callable

import torch

from dataloading.character_tokenizer import CharTokenizer
from models.clip import TinyCLIP
from models.diffusion import NoiseSchedule, ScheduleConfig
from models.prior import DiffusionPrior, PriorBundleConfig, sample_image_embeddings
from models.samplers import DEFAULT_GUIDANCE_SCALE, SAMPLERS, THRESHOLDING, Denoiser, StepCallback, sample
from models.superres import low_res_condition
from models.unet import Conditioning, UNet, UNetConfig
from utils.checkpoints import load_checkpoint
from utils.cli import require
from utils.errors import UserError
from utils.training import autocast


def clip_fingerprint(clip: TinyCLIP) -> dict:
    """What a decoder must agree on with the CLIP it was trained on."""
    weights = clip.text_encoder.projection.weight.detach().float().cpu().numpy().tobytes()
    return {"embed_dim": clip.config.embed_dim, "tokenizer": clip.tokenizer.to_dict(),
            "weights_sha1": hashlib.sha1(weights).hexdigest()[:16]}


def load_clip(path: str, device: torch.device | str = "cpu", data: dict | None = None) -> TinyCLIP:
    """A frozen CLIP from its checkpoint (``data``: the checkpoint already read, to avoid reading it twice)."""
    data = data if data is not None else load_checkpoint(path, "clip")
    try:
        model = TinyCLIP.from_checkpoint(data)
    except (KeyError, TypeError, RuntimeError) as err:
        raise UserError(f"checkpoint {path} is a damaged CLIP checkpoint ({type(err).__name__})") from None
    return model.to(device).eval().requires_grad_(False)


class ClipConditioner:
    """A frozen CLIP that turns prompts or images into decoder conditioning."""

    def __init__(self, clip: TinyCLIP) -> None:
        self.clip = clip

    @property
    def tokenizer(self) -> CharTokenizer:
        return self.clip.tokenizer

    def check_prompts(self, prompts: list[str]) -> None:
        """Refuse prompts the text encoder cannot read: empty, or with no known character."""
        require(len(prompts) > 0, "no prompt given")
        for prompt in prompts:
            require(prompt.strip() != "", "empty prompt: give some text, e.g. --prompt six")
            unknown = self.tokenizer.unknown_characters(prompt)
            known = set(prompt.lower()) - unknown - set(" ")
            require(len(known) > 0, f"prompt {prompt!r} has only characters the tokenizer does not know (it knows {self.tokenizer.alphabet!r})")
            if unknown:
                warnings.warn(f"prompt {prompt!r}: the characters {''.join(sorted(unknown))!r} are unknown and read as <unk>")

    @torch.no_grad()
    def text(self, prompts: list[str]) -> Conditioning:
        tokens = self.tokenizer.batch_encode(prompts)
        embedding, states = self.clip.encode_tokens(tokens)
        return Conditioning(embedding.float(), states.float(), tokens.mask.to(embedding.device))

    @torch.no_grad()
    def image(self, images: torch.Tensor) -> Conditioning:
        return Conditioning(self.clip.encode_image(images.to(self.clip.device)).float())


@dataclass
class DecoderConfig:
    unet: UNetConfig = field(default_factory=UNetConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    condition: str = "text"  # "text": CLIP text embedding (+ tokens); "image": CLIP image embedding (unCLIP)
    clip: dict = field(default_factory=dict)  # clip_fingerprint of the CLIP it was trained with
    dataset: str = "mnist"
    low_res_size: int = 0  # super-resolution: the size of the low-res condition (0: a base decoder)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "DecoderConfig":
        return cls(UNetConfig(**d["unet"]), ScheduleConfig(**d["schedule"]), d["condition"], d["clip"], d["dataset"], d.get("low_res_size", 0))


def default_checkpoint_name(stage: str, condition: str = "text", resolution: int = 0) -> str:
    """Where ``unclip_train.py`` writes a stage by default and ``generate_images.py`` looks for it:
    decoder, decoder_image, decoder_14px, decoder_image_14px, superres, superres_image or prior."""
    if stage == "prior":
        return "prior"
    return stage + ("_image" if condition == "image" else "") + (f"_{resolution}px" if stage == "decoder" and resolution else "")


class DiffusionBundle:
    """A network plus its noise schedule, loadable from a checkpoint of one kind."""

    kind: str  # the checkpoint kind, set by each subclass
    config_class: type

    def __init__(self, config, model: torch.nn.Module | None = None) -> None:
        self.config = config
        self.model = model if model is not None else self.build(config)
        self.schedule = NoiseSchedule(config.schedule)

    @staticmethod
    def build(config) -> torch.nn.Module:
        raise NotImplementedError

    @classmethod
    def load(cls, path: str, device: torch.device | str = "cpu"):
        data = load_checkpoint(path, cls.kind)
        try:
            bundle = cls(cls.config_class.from_dict(data["config"]))
            bundle.model.load_state_dict(data["ema"])  # sample with the EMA weights
        except (KeyError, TypeError, RuntimeError) as err:
            raise UserError(f"checkpoint {path} is a damaged {cls.kind} checkpoint ({type(err).__name__})") from None
        bundle.model.to(device).eval().requires_grad_(False)
        return bundle

    def check_clip(self, clip: TinyCLIP, path: str) -> None:
        """A diffusion stage only understands the CLIP space it was trained in."""
        mine, theirs = self.config.clip, clip_fingerprint(clip)
        require(mine["embed_dim"] == theirs["embed_dim"], f"{path} was trained on a CLIP with {mine['embed_dim']}-d embeddings, this CLIP has {theirs['embed_dim']}")
        require(mine["tokenizer"] == theirs["tokenizer"], f"{path} was trained with another tokenizer than this CLIP's")
        require(mine["weights_sha1"] == theirs["weights_sha1"], f"{path} was trained on another CLIP checkpoint (weights differ); retrain it or pass the matching --clip_model_path")

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


class Prior(DiffusionBundle):
    """The DALL-E 2 prior: CLIP text conditioning -> unit-norm CLIP image embeddings."""

    kind = "prior"
    config_class = PriorBundleConfig

    @staticmethod
    def build(config: PriorBundleConfig) -> torch.nn.Module:
        return DiffusionPrior(config.prior)

    def sample(self, cond: Conditioning, steps: int = 25, guidance_scale: float = 2.0, sampler: str = "dpmpp_2m",
               seed: int = 0, num_candidates: int = 1) -> torch.Tensor:
        return sample_image_embeddings(self.model, self.schedule, cond, steps, guidance_scale, sampler, seed, num_candidates)


class Decoder(DiffusionBundle):
    """A UNet plus its noise schedule: the part of a diffusion model that makes pixels."""

    kind = "decoder"
    config_class = DecoderConfig

    @staticmethod
    def build(config: DecoderConfig) -> torch.nn.Module:
        return UNet(config.unet)

    @torch.no_grad()
    def generate(self, cond: Conditioning, sampler: str = "dpmpp_2m", steps: int = 20, guidance_scale: float = DEFAULT_GUIDANCE_SCALE,
                 thresholding: str = "static", eta: float = 0.0, seed: int = 0, chunk_size: int = 256,
                 callback: StepCallback | None = None, progress: Callable | None = None, shared_noise: bool = False) -> torch.Tensor:
        """One image per row of ``cond``; [N, C, H, W] in [-1, 1], on the CPU. Large N runs in chunks.

        ``shared_noise``: every image starts from the same x_T, so only the conditioning differs.
        """
        require(sampler in SAMPLERS, f"unknown sampler {sampler!r}; choose from {', '.join(SAMPLERS)}")
        require(thresholding in THRESHOLDING, f"unknown thresholding {thresholding!r}; choose from {', '.join(THRESHOLDING)}")
        require(steps > 0, f"--steps must be positive, got {steps}")
        require(guidance_scale >= 0, f"--guidance_scale must be 0 or more, got {guidance_scale}")
        device = self.device
        generator = torch.Generator().manual_seed(seed)
        c, size = self.config.unet.image_channels, self.config.unet.image_size
        n = cond.embedding.shape[0]
        chunks = range(0, n, chunk_size)
        out = []
        for start in (progress(chunks) if progress else chunks):
            part = cond.select(slice(start, start + chunk_size)).to(device)
            denoiser = Denoiser(self.model, self.schedule, part, guidance_scale, thresholding, lambda: autocast(device))
            shape = (part.embedding.shape[0], c, size, size)
            if shared_noise:
                generator.manual_seed(seed)  # the same x_T in every chunk
            out.append(sample(denoiser, self.schedule, shape, sampler, steps, eta, generator, device, callback, shared_noise).float().cpu())
        return torch.cat(out).clamp(-1, 1)


class SuperResolution(Decoder):
    """The cascade's second stage: CLIP conditioning + a low-res image -> a full-size image (Imagen)."""

    kind = "superres"

    def upscale(self, low_res: torch.Tensor, cond: Conditioning, augmentation_level: float = 0.1, **generate_options) -> torch.Tensor:
        """low_res [N, C, h, w] in [-1, 1] (one per row of cond) -> [N, C, H, W].

        The condition is noised to the fixed ``augmentation_level`` (seeded, so same seed, same images).
        """
        require(0 <= augmentation_level <= 1, f"--augmentation_level must be in [0, 1], got {augmentation_level}")
        require(low_res.shape[-1] == self.config.low_res_size,
                f"this super-resolution model upscales {self.config.low_res_size}x{self.config.low_res_size} images, got {low_res.shape[-1]}x{low_res.shape[-2]}")
        generator = torch.Generator().manual_seed(generate_options.get("seed", 0) + 1)
        level = torch.full((low_res.shape[0],), float(augmentation_level))
        condition = low_res_condition(low_res.cpu(), level, self.config.unet.image_size, self.schedule, generator)
        full = Conditioning(cond.embedding, cond.tokens, cond.token_mask, low_res=condition, noise_level=level)
        return self.generate(full, **generate_options)


class Cascade:
    """Imagen's cascade, used like a Decoder: a base decoder at low resolution, then super-resolution.

    ``generate`` runs the base with the given sampler settings, then the
    super-resolution model with its own step count, guidance and augmentation level.
    """

    def __init__(self, base: Decoder, superres: SuperResolution, augmentation_level: float = 0.1, superres_steps: int = 20,
                 superres_guidance_scale: float = 1.0) -> None:
        self.base, self.superres = base, superres
        self.augmentation_level, self.superres_steps, self.superres_guidance_scale = augmentation_level, superres_steps, superres_guidance_scale
        self.config = superres.config  # what comes out: full-size images

    @classmethod
    def load(cls, clip: TinyCLIP, base_path: str, superres_path: str, device: torch.device | str = "cpu", **sampling) -> "Cascade":
        """Both stages from their checkpoints, checked against the CLIP and against each other."""
        base, superres = Decoder.load(base_path, device), SuperResolution.load(superres_path, device)
        base.check_clip(clip, base_path)
        superres.check_clip(clip, superres_path)
        low, size = superres.config.low_res_size, base.config.unet.image_size
        require(size == low, f"{superres_path} upscales {low}x{low} images but the base decoder {base_path} makes {size}x{size} ones"
                             f" (train a base with --resolution {low})")
        require(base.config.condition == superres.config.condition, f"{base_path} is conditioned on CLIP {base.config.condition} embeddings, "
                                                                    f"{superres_path} on {superres.config.condition} embeddings")
        return cls(base, superres, **sampling)

    def generate(self, cond: Conditioning, sampler: str = "dpmpp_2m", steps: int = 20, guidance_scale: float = DEFAULT_GUIDANCE_SCALE,
                 thresholding: str = "static", eta: float = 0.0, seed: int = 0, chunk_size: int = 256,
                 callback: StepCallback | None = None, progress: Callable | None = None, shared_noise: bool = False) -> torch.Tensor:
        """[N, C, H, W] full-size images; ``callback`` sees the base stage's trajectory."""
        low = self.base.generate(cond, sampler, steps, guidance_scale, thresholding, eta, seed, chunk_size, callback, progress, shared_noise)
        return self.superres.upscale(low, cond, self.augmentation_level, sampler=sampler, steps=self.superres_steps,
                                     guidance_scale=self.superres_guidance_scale, thresholding=thresholding, eta=eta, seed=seed,
                                     chunk_size=chunk_size, shared_noise=shared_noise)


def slerp(a: torch.Tensor, b: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation between unit vectors a, b [D] at weights [K] -> [K, D] (Shoemake 1985)."""
    a, b = torch.nn.functional.normalize(a, dim=-1), torch.nn.functional.normalize(b, dim=-1)
    omega = torch.arccos((a * b).sum().clamp(-1 + 1e-7, 1 - 1e-7))
    w = weights[:, None]
    return (torch.sin((1 - w) * omega) * a + torch.sin(w * omega) * b) / torch.sin(omega)
