"""The style release: a CLIP and a text decoder trained on style captions, judged, shipped in pretrained/style/.

    python benchmarks/release_style.py                  # about an hour of training on a 2-core CPU with AVX-512 (CLIP 2 min, decoder 20 + 40)
    python benchmarks/release_style.py --scale 0.01 --per_prompt 2 --per_class 5   # to try it in a minute: outputs/release_trial/style/
    python benchmarks/release_style.py --keep clip decoder   # no training: the shipped weights measured again (a new guidance scale)

The captions name how each digit is drawn as well as which digit it is ("a thick six slanted left",
``--captions style``); the CLIP max-pools its text LSTM's states (``--text_pooling max``), which carries the class
word through sentence shapes training never used. Like ``release.py`` (whose ``ReleaseStage`` runs the trainers
here, each with ``--resume``), it trains into ``checkpoints/release/style/``, then measures with
``benchmarks/attributes.py`` (adherence to attribute words, class accuracy by phrasing, the tercile shares when
nothing is named) and ``benchmarks/decoder_quality.py`` (plain prompts), and writes the EMA weights,
``attributes.json`` and a model card ``README.md`` to ``pretrained/style/`` (about 4.5 MB). ``demo.ipynb`` shows them.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import common  # noqa: F401

from evaluation.reports import machine
from models.samplers import DEFAULT_GUIDANCE_SCALE
from release import OUTPUT_DIR, WORK_DIR, ReleaseStage, RunSettings, WarmRestart, WorkFiles, card_judge_path, judging_flags, keep_error, quality_is_stale, run, shipped_file, shown_arguments, steps_text, train, training_minutes
from utils.checkpoints import PRETRAINED_DIR, WEIGHTS_SUFFIX, export_weights, load_checkpoint
from utils.files import write_json

STYLE_STAGES = (
    ReleaseStage("clip", "clip", "clip_train.py", ("--captions", "style", "--text_pooling", "max"), 30,
                 "tiny CLIP on style captions, max-pooled text LSTM"),
    # Warm-restarted, and sampled at 1.35: the highest guidance at which naming nothing still draws every tercile within
    # 10 points of the real shares (at 1.5 the thin and narrow ones fell 11 points short), every digit reading at >= 94 %
    # on plain prompts and >= 98 % of attribute prompts read right (BENCHMARKS.md, nineteenth, twenty-third and twenty-fourth sessions).
    ReleaseStage("decoder", "decoder", "unclip_train.py", ("--captions", "style"), 8000, "text decoder on style captions: CLIP text embedding -> 28x28",
                 guidance_scale=1.35, restarts=(WarmRestart(steps=24000, lr=1e-3, seed_offset=2),)),
)
SHIPPED_DIR = PRETRAINED_DIR / "style"
DECODER = STYLE_STAGES[-1]
GUIDANCE = DECODER.guidance_scale or DEFAULT_GUIDANCE_SCALE  # what it is judged and (named in its file) sampled at


def attributes_are_stale(result_path: Path, decoder: Path) -> bool:
    """Whether an attributes.py result must be measured again: missing, older than the decoder, judged at another guidance
    scale, or measured before the spread with nothing named had its own image count (``plain_per_prompt``)."""
    if not result_path.exists() or result_path.stat().st_mtime < decoder.stat().st_mtime:
        return True
    result = json.loads(result_path.read_text())
    return result.get("guidance_scale") != GUIDANCE or "plain_per_prompt" not in result


def name_guidance(files: WorkFiles, out_dir: Path) -> None:
    """A kept stage's shipped file names the guidance the recipe samples it at now: rewritten in place (the same weights)
    where it names another, before it is measured, so that its results are not older than it. Only when the release
    goes to where they ship: a trial's copies name it (``ship``) and the shipped files stay untouched."""
    if out_dir.resolve() != files.shipped_dir.resolve():
        return
    for stage in files.stages:
        path = files(shipped_file(stage))
        if stage.name in files.kept and stage.extra_fields() and load_checkpoint(path, stage.kind).get("sampling") != stage.extra_fields()["sampling"]:
            export_weights(path, path, stage.extra_fields())
            print(f"wrote {path} (the same weights, now naming guidance {stage.guidance_scale:g})")


def measure(files: WorkFiles, outputs: Path, judge_path: Path, per_prompt: int, per_class: int) -> tuple[dict, dict]:
    """(attributes.py's result, decoder_quality.py's result), each measured again when the decoder is newer than it
    or was judged at another guidance scale (and the second at other settings than the release's, release.quality_is_stale)."""
    results = []
    decoder = files(shipped_file(DECODER))
    for name, script, flags, stale in (
            ("attributes", "benchmarks/attributes.py", ["--per_prompt", str(per_prompt), "--guidance_scale", str(GUIDANCE)],
             lambda path: attributes_are_stale(path, decoder)),
            ("quality", "benchmarks/decoder_quality.py", ["--per_class", str(per_class), *judging_flags([GUIDANCE])],
             lambda path: quality_is_stale(path, [decoder], [GUIDANCE]))):
        path = outputs / f"{name}.json"
        if stale(path):
            run([sys.executable, script, "--clip_model_path", str(files("clip.pt")), "--decoder_path", str(decoder),
                 "--judge_path", str(judge_path), *flags, "--name", name, "--folder", str(outputs)])
        results.append(json.loads(path.read_text()))
    return results[0], results[1]


def model_card(metrics: dict, attributes: dict, quality: dict, weights: list[Path], commands: list[list[str]], note: str | None, kept: set[str] = frozenset()) -> str:
    """pretrained/style/README.md: the two stages, and what their words do to the pictures."""
    text = attributes["results"]["text decoder"]
    lines = ["# Shipped weights: style captions", "",
             f"Made by `python benchmarks/release_style.py{''.join(' ' + a for a in shown_arguments(sys.argv[1:]))}` on {time.strftime('%Y-%m-%d')}, "
             f"{machine()}, {sum(training_minutes(m) for m in metrics.values()):.0f} minutes of training. The data and split are the "
             "release's (../README.md); the captions name each digit's measured thickness, slant and width terciles.", "",
             "| file | stage | steps | training minutes | parameters |", "|---|---|---|---|---|"]
    for stage, path in zip(STYLE_STAGES, weights):
        m = metrics[stage.name]
        lines.append(f"| `{path.name}` ({path.stat().st_size / 1e6:.1f} MB) | {stage.description()} | {steps_text(stage, m)} | {training_minutes(m):.1f} | {m['parameters']:,} |")
    lines += ["", f"Adherence ({attributes['per_prompt']} images per prompt, guidance {attributes['guidance_scale']:g}): the AUC that the image drawn for the high word "
              "(\"a thick six\") measures higher than the one for the low word (\"a thin six\"), mean over digits (worst digit); then the share in the tercile asked for.", "",
              "| phrasing | " + " | ".join(next(iter(text["adherence"].values()))) + " |", "|---|" + "---|" * len(next(iter(text["adherence"].values())))]
    for phrasing, by in text["adherence"].items():
        lines.append(f"| {phrasing} | " + " | ".join(f"{v['auc']['mean']:.3f} ({v['auc']['min']:.3f}), {v['in_tercile']:.2f}" for v in by.values()) + " |")
    lines += ["", "Judge class accuracy by phrasing: " + ", ".join(f"{k} {v:.1%}" for k, v in text["class_accuracy_by_phrasing"].items()) + ".", "",
              "Tercile shares when nothing is named (low / middle / high): " + "; ".join(
                  f"{a} {' / '.join(f'{s:.2f}' for s in v['shares'])} (real {' / '.join(f'{s:.2f}' for s in attributes['real_terciles'][a])})"
                  for a, v in text["no_attribute_named"].items()) + f" ({attributes['plain_per_prompt']} images per digit).", ""]
    lines += [f"Plain prompts (\"six\"), as in the release's card: {quality['per_class']} per digit at each of the sampler seeds {', '.join(map(str, quality['seeds']))}, "
              "accuracy over all of them, the Fréchet ratio (its seeds' range) and two-sample accuracy as the seeds' means:", "",
              "| form | accuracy (worst digit) | Fréchet ratio | two-sample |", "|---|---|---|---|"]
    lines += [f"| {row['form']} | {row['accuracy']:.1%} ({row['min_class_accuracy']:.1%}) | {row['frechet_ratio']:.2f}× "
              f"({min(row['frechet_ratio_per_seed']):.2f}–{max(row['frechet_ratio_per_seed']):.2f}) | {row['two_sample']['accuracy']:.3f} |"
              for row in quality["results"]]
    lines += ["", "Measured with:", "", f"    {attributes['command']}", f"    {quality['command']}", "", "Training commands:", ""]
    lines += [f"    python {' '.join(command[1:])}" for command in commands]
    lines += ["", f"Kept as they shipped before (`--keep {' '.join(sorted(kept))}`): trained by the commands above, measured again here."] if kept else []
    lines += ["", note] if note else []
    return "\n".join(lines) + "\n"


def ship(files: WorkFiles, stage: ReleaseStage, metrics: dict, out_dir: Path) -> Path:
    """A stage's weights (naming its guidance) and metrics in ``out_dir``: exported from its checkpoint, or from a kept
    stage's shipped file (left in place when the release goes there: ``name_guidance``)."""
    weights = out_dir / f"{stage.name}{WEIGHTS_SUFFIX}"
    source = files(shipped_file(stage))
    if stage.name in files.kept and source.resolve() == weights.resolve():
        print(f"kept {weights} ({weights.stat().st_size / 1e6:.1f} MB)")
        return weights
    export_weights(source, weights, stage.extra_fields())
    print(f"wrote {write_json(weights.with_suffix('.json'), metrics)}")
    print(f"wrote {weights} ({weights.stat().st_size / 1e6:.1f} MB)")
    return weights


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every stage's step budget")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None, help="as release.py's --compile")
    parser.add_argument("--per_prompt", type=int, default=20, help="attributes.py: images per prompt")
    parser.add_argument("--per_class", type=int, default=100, help="decoder_quality.py: images per digit and sampler seed")
    parser.add_argument("--card_note", default=None, help="a paragraph the model card adds under the training commands")
    parser.add_argument("--keep", nargs="+", default=[], choices=[stage.name for stage in STYLE_STAGES],
                        help=f"stages taken as they ship in {SHIPPED_DIR}, not trained again: --keep clip decoder measures the shipped weights again")
    args = parser.parse_args()
    if args.scale <= 0 or args.per_prompt < 2 or args.per_class <= 0:
        parser.error("--scale and --per_class must be positive, and --per_prompt at least 2")
    run_name = "release" + ("_trial" if args.scale < 1 else "")
    work, outputs = WORK_DIR.parent / run_name / "style", OUTPUT_DIR.parent / run_name / "style"
    files = WorkFiles(work, set(args.keep), STYLE_STAGES, SHIPPED_DIR)
    if error := keep_error(files):
        parser.error(error)
    out_dir = SHIPPED_DIR if run_name == "release" else outputs / "pretrained"
    judge_path = card_judge_path()
    settings = RunSettings(work, outputs, args.scale, args.seed, args.device, compile=args.compile)
    metrics = train(files, settings)
    commands = [command for stage in STYLE_STAGES for _, command in stage.commands(settings)]  # a kept stage's too: they made its weights
    name_guidance(files, out_dir)
    attributes, quality = measure(files, outputs, judge_path, args.per_prompt, args.per_class)
    weights = [ship(files, stage, metrics[stage.name], out_dir) for stage in STYLE_STAGES]
    print(f"wrote {write_json(out_dir / 'attributes.json', attributes)}")
    card = out_dir / "README.md"
    card.write_text(model_card(metrics, attributes, quality, weights, commands, args.card_note, files.kept))
    print(f"wrote {card}")


if __name__ == "__main__":
    main()
