"""Glue between CLIP and the diffusion stages: conditioning, loading checkpoints, generation.

    prompts --ClipConditioner.text--> Conditioning --Decoder.generate--> images [N, C, H, W] in [-1, 1]

Every stage is a ``DiffusionBundle``: a network, its noise schedule and the
config both were built from, loaded from a checkpoint of one kind and checked
against the CLIP it was trained on. The decoder lives here; the prior
(``models.prior.Prior``) and super-resolution (``models.superres``) build on it.
"""
from __future__ import annotations

import hashlib
import math
import warnings
from dataclasses import asdict, dataclass, field
from typing import Callable

import torch

from dataloading.character_tokenizer import CharTokenizer
from models.clip import TinyCLIP
from models.diffusion import NoiseSchedule, ScheduleConfig
from models.samplers import DEFAULT_GUIDANCE_SCALE, Denoiser, SamplingOptions, StepCallback, sample
from models.conditioning import Conditioning
from models.pixel_space import LOGIT_DELTA, PixelSpace
from models.unet import UNet, UNetConfig
from utils.checkpoints import load_checkpoint
from utils.errors import UserError, require
from utils.training import autocast


class ClipMismatch(UserError):
    """A stage loaded with another CLIP than the one it was trained on (a UserError: one line, exit code 2)."""


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
            require(prompt.strip() != "", "empty prompt: give some text, e.g. 'six'")
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
    pixel_space: str = "linear"  # where the diffusion runs: "linear" pixels or "logit" (models.pixel_space)
    logit_delta: float = LOGIT_DELTA  # the logit space's distance from 0 and 1

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "DecoderConfig":
        return cls(UNetConfig(**d["unet"]), ScheduleConfig(**d["schedule"]), d["condition"], d["clip"], d["dataset"], d.get("low_res_size", 0),
                   d.get("pixel_space", "linear"), d.get("logit_delta", LOGIT_DELTA))


def recommended_guidance(data: dict, path: str, default: float) -> float:
    """The guidance scale a checkpoint's ``sampling`` field names (``release.py`` writes the one its model card chose
    for the shipped text decoder), or ``default`` when it names none (every checkpoint a trainer writes)."""
    sampling = data.get("sampling", {})
    value = sampling.get("guidance_scale", default) if isinstance(sampling, dict) else sampling
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise UserError(f"checkpoint {path} names no usable guidance scale in its 'sampling' field ({value!r})")
    return float(value)


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
    default_guidance_scale: float = DEFAULT_GUIDANCE_SCALE

    def __init__(self, config, model: torch.nn.Module | None = None, guidance_scale: float | None = None) -> None:
        self.config = config
        self.model = model if model is not None else self.build(config)
        self.schedule = NoiseSchedule(config.schedule)
        # what it samples at unless told: the scale its file names (a release writes its model card's choice), else the default
        self.guidance_scale = self.default_guidance_scale if guidance_scale is None else guidance_scale

    @staticmethod
    def build(config) -> torch.nn.Module:
        raise NotImplementedError

    @classmethod
    def load(cls, path: str, device: torch.device | str = "cpu", clip: TinyCLIP | None = None):
        """The EMA weights of the checkpoint at ``path``; with ``clip``, refused unless it was trained on that CLIP."""
        data = load_checkpoint(path, cls.kind)
        guidance_scale = recommended_guidance(data, path, cls.default_guidance_scale)
        try:
            bundle = cls(cls.config_class.from_dict(data["config"]), guidance_scale=guidance_scale)
            bundle.model.load_state_dict(data["ema"])  # sample with the EMA weights
        except (KeyError, TypeError, RuntimeError) as err:
            raise UserError(f"checkpoint {path} is a damaged {cls.kind} checkpoint ({type(err).__name__})") from None
        bundle.model.to(device).eval().requires_grad_(False)
        if clip is not None:
            bundle.check_clip(clip, path)
        return bundle

    def check_clip(self, clip: TinyCLIP, path: str) -> None:
        """A diffusion stage only understands the CLIP space it was trained in."""
        mine, theirs = self.config.clip, clip_fingerprint(clip)
        for agrees, message in (
            (mine["embed_dim"] == theirs["embed_dim"], f"{path} was trained on a CLIP with {mine['embed_dim']}-d embeddings, this CLIP has {theirs['embed_dim']}"),
            (mine["tokenizer"] == theirs["tokenizer"], f"{path} was trained with another tokenizer than this CLIP's"),
            (mine["weights_sha1"] == theirs["weights_sha1"], f"{path} was trained on another CLIP checkpoint (weights differ); retrain it on this CLIP, or use the CLIP checkpoint it was trained on")):
            if not agrees:
                raise ClipMismatch(message)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


class Decoder(DiffusionBundle):
    """A UNet plus its noise schedule: the part of a diffusion model that makes pixels."""

    kind = "decoder"
    config_class = DecoderConfig

    @staticmethod
    def build(config: DecoderConfig) -> torch.nn.Module:
        return UNet(config.unet)

    @property
    def pixel_space(self) -> PixelSpace:
        return PixelSpace(self.config.pixel_space, self.config.logit_delta)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] -> what the diffusion runs on: x0 for training, or to noise real images (SDEdit)."""
        return self.pixel_space.encode(images)

    @torch.no_grad()
    def generate(self, cond: Conditioning, sampling: SamplingOptions = SamplingOptions(), chunk_size: int = 256,
                 callback: StepCallback | None = None, progress: Callable | None = None, shared_noise: bool = False) -> torch.Tensor:
        """One image per row of ``cond``; [N, C, H, W] in [-1, 1], on the CPU. Large N runs in chunks.

        ``shared_noise``: every image starts from the same x_T, so only the conditioning differs.
        ``callback`` sees x_t and x0_hat as images (decoded from the pixel space).
        """
        require(chunk_size > 0, f"chunk_size must be positive, got {chunk_size}")
        device = self.device
        generator = torch.Generator().manual_seed(sampling.seed)
        c, size = self.config.unet.image_channels, self.config.unet.image_size
        chunks = range(0, cond.embedding.shape[0], chunk_size)
        space = self.pixel_space
        if callback is not None and space.kind != "linear":
            callback = decoded_callback(callback, space)
        out = []
        for start in (progress(chunks) if progress else chunks):
            part = cond.select(slice(start, start + chunk_size)).to(device)
            denoiser = Denoiser(self.model, self.schedule, part, sampling.guidance_scale, sampling.thresholding, lambda: autocast(device),
                                 sampling.guidance_from_t)
            shape = (part.embedding.shape[0], c, size, size)
            if shared_noise:
                generator.manual_seed(sampling.seed)  # the same x_T in every chunk
            out.append(sample(denoiser, self.schedule, shape, sampling, generator, device, callback, shared_noise).float().cpu())
        return space.decode(torch.cat(out).clamp(-1, 1))


def decoded_callback(callback: StepCallback, space: PixelSpace) -> StepCallback:
    """The sampler's callback, shown x_t and x0_hat as images rather than in the diffusion's pixel space."""
    def see(t: int, x: torch.Tensor, x0: torch.Tensor) -> None:
        callback(t, space.decode(x.clamp(-1, 1)), space.decode(x0.clamp(-1, 1)))
    return see


def slerp(a: torch.Tensor, b: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation between unit vectors a, b [D] at weights [K] -> [K, D] (Shoemake 1985)."""
    a, b = torch.nn.functional.normalize(a, dim=-1), torch.nn.functional.normalize(b, dim=-1)
    omega = torch.arccos((a * b).sum().clamp(-1 + 1e-7, 1 - 1e-7))
    w = weights.to(a)[:, None]  # on a's device and dtype
    return (torch.sin((1 - w) * omega) * a + torch.sin(w * omega) * b) / torch.sin(omega)
