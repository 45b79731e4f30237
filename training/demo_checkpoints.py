"""What demo.ipynb needs besides the package itself: its checkpoints, found or quick-trained.

For each stage the notebook takes, in this order, the first that exists and fits
the CLIP: the checkpoint the scripts wrote (``checkpoints/decoder.pt`` ...), the
shipped release weights (``pretrained/decoder.safetensors`` ...), or one trained
earlier into ``checkpoints/demo/``. Only when none does is one trained there, by
the same trainers the scripts call, with a smaller budget (``QUICK``: about six
minutes for all of them on a 2-core CPU) or a tiny one (``TINY``: seconds, models
that draw noise) for the tests. ``ensure_style_checkpoints`` does the same for the
CLIP and text decoder trained on style captions (``style/clip`` ...), which the
notebook's attribute section shows.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from models.pipeline import Decoder, load_clip
from models.prior import Prior
from models.superres import SuperResolution
from training.clip_trainer import ClipTrainingConfig, train_clip
from training.diffusion_trainer import train_unclip
from training.unclip_configs import DecoderTrainingConfig, PriorTrainingConfig, SuperResolutionTrainingConfig
from utils.checkpoints import PRETRAINED_DIR, WEIGHTS_SUFFIX
from utils.errors import UserError

STAGES = {  # name -> (bundle class, training config, options beside the stage's own defaults)
    "decoder": (Decoder, DecoderTrainingConfig, {}),
    "decoder_image": (Decoder, DecoderTrainingConfig, {"condition": "image"}),
    "prior": (Prior, PriorTrainingConfig, {}),
    "decoder_14px": (Decoder, DecoderTrainingConfig, {"resolution": 14}),
    "superres": (SuperResolution, SuperResolutionTrainingConfig, {}),
}
QUICK = {"clip": {"epochs": 4}, "decoder": {"max_minutes": 1.5}, "decoder_image": {"max_minutes": 1.5}, "prior": {"max_minutes": 0.5},
         "decoder_14px": {"max_minutes": 0.75}, "superres": {"max_minutes": 0.75}}
STYLE_QUICK = {"clip": {"epochs": 15}, "decoder": {"max_minutes": 2.0}}  # attributes need more CLIP epochs than classes do
TINY = {"clip": {"epochs": 2, "train_subset": 600}, "decoder": {"steps": 3, "channels": "8,16", "train_subset": 64},
        "decoder_image": {"steps": 3, "channels": "8,16", "train_subset": 64}, "prior": {"steps": 3, "prior_width": 16, "prior_depth": 1},
        "decoder_14px": {"steps": 3, "channels": "8,16", "train_subset": 64}, "superres": {"steps": 3, "channels": "8,16", "train_subset": 64}}


@dataclass
class DemoCheckpoints:
    clip: Path
    decoder: Path
    decoder_image: Path
    prior: Path
    decoder_14px: Path
    superres: Path
    trained: list[str]  # which of them this call trained


def candidate_paths(folder: Path, pretrained: str | Path | None, name: str) -> list[Path]:
    """Where a stage may be, in the order it is taken: the scripts' checkpoint, the shipped weights, the notebook's own."""
    shipped = [Path(pretrained) / f"{name}{WEIGHTS_SUFFIX}"] if pretrained else []
    return [folder / f"{name}.pt", *shipped, folder / "demo" / f"{name}.pt"]


def fits(bundle_class, path: Path, clip) -> bool:
    """True if ``path`` holds a checkpoint of this kind trained on this CLIP."""
    if not path.exists():
        return False
    try:
        bundle_class.load(str(path), clip=clip)
    except UserError:
        return False
    return True


def ensure_checkpoints(folder: str | Path = "checkpoints", pretrained: str | Path | None = PRETRAINED_DIR, tiny: bool = False,
                       log=print, device: str = "auto") -> DemoCheckpoints:
    """Every checkpoint the notebook shows: the scripts' own, else the shipped ones (``pretrained``; None: never),
    else quick-trained into ``folder/demo`` on ``device``; each only where it fits the CLIP."""
    folder = Path(folder)
    demo = folder / "demo"
    budget = TINY if tiny else QUICK
    trained: list[str] = []

    candidates = lambda name: candidate_paths(folder, pretrained, name)  # noqa: E731
    clip_path = next((p for p in candidates("clip") if p.exists()), demo / "clip.pt")
    if not clip_path.exists():
        log(f"no CLIP checkpoint: training one into {clip_path}")
        train_clip(ClipTrainingConfig(save_path=str(clip_path), output_dir=str(demo / "clip"), device=device, **budget["clip"]), log=log)
        trained.append("clip")
    clip = load_clip(str(clip_path))
    paths = {"clip": clip_path}
    for name, (bundle_class, config_class, options) in STAGES.items():
        assert config_class(**options).checkpoint_name() == name
        found = next((p for p in candidates(name) if fits(bundle_class, p, clip)), None)
        if found is None:
            found = demo / f"{name}.pt"
            log(f"no {name} checkpoint for this CLIP: training one into {found}")
            config = config_class(clip_model_path=str(clip_path), save_path=str(found), output_dir=str(demo / name),
                                  sample_every=0, device=device, **options, **budget[name])
            train_unclip(config, log=log)
            trained.append(name)
        paths[name] = found
    return DemoCheckpoints(**paths, trained=trained)


def ensure_style_checkpoints(folder: str | Path = "checkpoints", pretrained: str | Path | None = PRETRAINED_DIR, tiny: bool = False,
                             log=print, device: str = "auto") -> tuple[Path, Path, list[str]]:
    """(CLIP, text decoder, what was trained now), both trained on style captions: ``style/clip`` and ``style/decoder``
    in the scripts' checkpoints, else shipped, else quick-trained into ``folder/demo/style``."""
    folder = Path(folder)
    demo = folder / "demo" / "style"
    budget = TINY if tiny else STYLE_QUICK
    trained: list[str] = []
    clip_path = next((p for p in candidate_paths(folder, pretrained, "style/clip") if p.exists()), demo / "clip.pt")
    if not clip_path.exists():
        log(f"no style CLIP: training one into {clip_path}")
        train_clip(ClipTrainingConfig(captions="style", text_pooling="max", save_path=str(clip_path), output_dir=str(demo / "clip"),
                                      device=device, **budget["clip"]), log=log)
        trained.append("style/clip")
    clip = load_clip(str(clip_path))
    decoder_path = next((p for p in candidate_paths(folder, pretrained, "style/decoder") if fits(Decoder, p, clip)), None)
    if decoder_path is None:
        decoder_path = demo / "decoder.pt"
        log(f"no style decoder for this CLIP: training one into {decoder_path}")
        train_unclip(DecoderTrainingConfig(clip_model_path=str(clip_path), captions="style", save_path=str(decoder_path),
                                           output_dir=str(demo / "decoder"), sample_every=0, device=device, **budget["decoder"]), log=log)
        trained.append("style/decoder")
    return clip_path, decoder_path, trained
