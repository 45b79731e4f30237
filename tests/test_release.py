"""The release recipe's bookkeeping (benchmarks/release.py): which files a release judges and ships, and what its card shows.
Training and judging are the trainers' and decoder_quality.py's, tested elsewhere; a whole trial run is
``python benchmarks/release.py --scale 0.01``."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import release  # noqa: E402
import release_style  # noqa: E402
from conftest import assert_one_line_error  # noqa: E402


def test_a_stage_ships_the_ema_it_names():
    stages = {stage.name: stage for stage in release.STAGES}
    assert release.shipped_file(release.ReleaseStage("decoder", "decoder", "unclip_train.py", (), 10, "", shipped_ema="0.999")) == "decoder_ema0.999.pt"
    assert release.shipped_file(stages["prior"]) == "prior.pt"
    assert release.PIPELINES["text decoder"][0] == ["--decoder_path", release.shipped_file(stages["decoder"])]


def test_kept_stages_are_read_from_the_shipped_weights(tmp_path):
    files = release.WorkFiles(tmp_path, kept={"clip", "prior"})
    assert files("clip.pt").resolve() == (release.PRETRAINED_DIR / "clip.safetensors").resolve()
    assert not files("clip.pt").is_absolute()  # the model card prints it
    assert files("prior.pt").resolve() == (release.PRETRAINED_DIR / "prior.safetensors").resolve()
    assert files("decoder.pt") == tmp_path / "decoder.pt" and files("decoder_ema0.999.pt") == tmp_path / "decoder_ema0.999.pt"
    kept_decoder = release.WorkFiles(tmp_path, kept={"clip", "decoder"})
    shipped = release.shipped_file(next(stage for stage in release.STAGES if stage.name == "decoder"))
    assert kept_decoder(shipped).resolve() == (release.PRETRAINED_DIR / "decoder.safetensors").resolve()
    unshipped = next(f"decoder_ema{decay}.pt" for decay in ("0.999", "0.9995") if f"decoder_ema{decay}.pt" != shipped)
    assert not kept_decoder(unshipped).exists()  # the EMAs a kept decoder does not ship are absent: their pipelines are left out
    style = release.WorkFiles(tmp_path, kept=set())  # release_style.py: its own stages, none of them kept
    assert style("style_decoder.pt") == tmp_path / "style_decoder.pt" and style("decoder_first_ema0.999.pt") == tmp_path / "decoder_first_ema0.999.pt"


def test_the_card_shows_the_command_without_its_note():
    shown = release.shown_arguments(["--keep", "clip", "prior", "--card_note", "a paragraph", "--seed", "1", "--card_note=x"])
    assert shown == ["--keep", "clip", "prior", "--seed", "1"]


@pytest.mark.parametrize("recipe, keep, message", [(release, ["prior"], "add clip to --keep"), (release, ["clip", "nothing"], "invalid choice"),
                                                    (release_style, ["decoder"], "add clip to --keep"), (release_style, ["clip", "prior"], "invalid choice")])
def test_keep_takes_shipped_stages_with_their_clip(recipe, keep, message, capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", [Path(recipe.__file__).name, "--keep", *keep])
    with pytest.raises(SystemExit) as exit_:
        recipe.main()
    assert_one_line_error(capsys, exit_.value.code, message)


def test_the_text_decoder_ships_the_guidance_its_card_judges():
    """The scale written into the shipped text decoder (generate_images.py's default for it) is one the release judges,
    so the notebook finds its row in quality.json; the other stages name none and sample at the default."""
    stages = {stage.name: stage for stage in release.STAGES}
    scale = stages["decoder"].guidance_scale
    assert stages["decoder"].extra_fields() == {"sampling": {"guidance_scale": scale}} and scale in release.PIPELINES["text decoder"][1]
    assert all(stage.extra_fields() is None for name, stage in stages.items() if name != "decoder")


def test_a_quality_row_pools_its_seeds():
    """decoder_quality.py's row for one scale and form: accuracy over every seed's images, the worst digit on the pooled
    images (not the worst seed's), the Frechet ratio and two-sample accuracy as the seeds' means, each seed's figures kept."""
    import decoder_quality

    def one_seed(seed, per_class, ratio, two_sample):
        pixels = {"black": 0.8, "saturated": 0.07, "mean": 0.13, "histogram": [0.8, 0.2], "histogram_edges": [0, 1, 256]}
        return {"seed": seed, "accuracy": sum(per_class) / 2, "min_class_accuracy": min(per_class), "per_class_accuracy": per_class,
                "frechet": ratio / 10, "frechet_ratio": ratio, "num_images": 200, "seconds": 1.0, "pixels": pixels,
                "two_sample": {"accuracy": two_sample, "standard_error": 0.04}}
    row = decoder_quality.mean_over_seeds([one_seed(1, [0.96, 1.0], 1.3, 0.52), one_seed(2, [1.0, 0.98], 1.8, 0.56)])
    assert row["per_class_accuracy"] == pytest.approx([0.98, 0.99]) and row["min_class_accuracy"] == pytest.approx(0.98)
    assert row["accuracy"] == pytest.approx(0.985) and row["num_images"] == 400 and row["seeds"] == [1, 2]
    assert row["frechet_ratio"] == pytest.approx(1.55) and row["frechet_ratio_per_seed"] == [1.3, 1.8]
    assert row["two_sample"]["accuracy"] == pytest.approx(0.54) and row["two_sample"]["per_seed"] == [0.52, 0.56]
    assert row["pixels"]["histogram"] == pytest.approx([0.8, 0.2]) and len(row["per_seed"]) == 2


def test_a_result_judged_at_other_sampler_seeds_or_from_another_file_is_judged_again(tmp_path, monkeypatch):
    """A pipeline's result file from before the release judged at several seeds (or at other ones), or one made from
    another EMA than the pipeline now names, is measured again."""
    work, outputs = tmp_path / "work", tmp_path / "outputs"
    work.mkdir()
    flags, scales = release.PIPELINES["text decoder"]
    for name in ("clip.pt", flags[1]):
        (work / name).write_bytes(b"weights")
    result_path = outputs / "quality" / f"release_{list(release.PIPELINES).index('text decoder')}.json"
    result_path.parent.mkdir(parents=True)
    write_result = lambda seeds, decoder: result_path.write_text(json.dumps({
        "seeds": seeds, "decoder_path": decoder, "results": [{"guidance_scale": s, "form": f} for s in scales for f in release.JUDGE_FORMS]}))
    write_result([1], str(work / flags[1]))
    commands = []

    def judged(command):
        commands.append(command)
        write_result([int(seed) for seed in command[command.index("--seeds") + 1 : command.index("--forms")]], command[command.index("--decoder_path") + 1])

    monkeypatch.setattr(release, "run", judged)
    judge = lambda: release.judge(release.WorkFiles(work, set()), outputs, per_class=10, judge_path=tmp_path / "judge.pt")
    results = judge()
    assert len(commands) == 1 and list(results) == ["text decoder"]  # the only pipeline whose files exist, measured again
    assert json.loads(result_path.read_text())["seeds"] == list(release.JUDGE_SEEDS)
    judge()
    assert len(commands) == 1  # judged at the release's seeds now: not again
    write_result(list(release.JUDGE_SEEDS), str(work / "decoder_ema0.12345.pt"))  # made from another EMA
    judge()
    assert len(commands) == 2 and json.loads(result_path.read_text())["decoder_path"] == str(work / flags[1])


def test_a_warm_restarted_stage_trains_once_per_restart_each_run_from_the_one_befores_ema(tmp_path):
    stage = release.ReleaseStage("decoder", "decoder", "unclip_train.py", ("--extra_ema_decays", "0.999"), 1000, "text decoder",
                                 restarts=(release.WarmRestart(steps=500, lr=1e-3, seed_offset=2, start_ema="0.999"),
                                           release.WarmRestart(steps=300, lr=5e-4, seed_offset=3)))
    settings = release.RunSettings(tmp_path, tmp_path / "out", 0.1, 5, "cpu", tmp_path / "clip.pt")
    runs = stage.commands(settings)
    (first_metrics, first), (middle_metrics, middle), (final_metrics, last) = runs
    value = lambda command, flag: command[command.index(flag) + 1]
    assert stage.run_names == ["decoder_first", "decoder_restart1", "decoder"]
    assert [first_metrics, middle_metrics, final_metrics] == [tmp_path / f"{name}.json" for name in stage.run_names]
    assert value(first, "--save_path") == str(tmp_path / "decoder_first.pt") and value(first, "--steps") == "100"
    assert "--init_from" not in first and value(first, "--seed") == "5"
    assert value(middle, "--save_path") == str(tmp_path / "decoder_restart1.pt") and value(middle, "--steps") == "50"
    assert value(middle, "--init_from") == str(tmp_path / "decoder_first_ema0.999.pt")
    assert value(middle, "--lr") == "0.001" and value(middle, "--seed") == "7" and "--resume" in middle
    assert value(last, "--save_path") == str(tmp_path / "decoder.pt") and value(last, "--steps") == "30"
    assert value(last, "--init_from") == str(tmp_path / "decoder_restart1.pt")  # no start_ema: the run's main EMA
    assert value(last, "--lr") == "0.0005" and value(last, "--seed") == "8"
    assert stage.command(settings) == first
    assert release.ReleaseStage("prior", "prior", "unclip_train.py", (), 10, "prior").run_names == ["prior"]
    assert release.training_minutes({"train_seconds": 60, "earlier_runs": [{"train_seconds": 120}, {"train_seconds": 60}]}) == 4
    assert release.training_minutes({"train_seconds": 60}) == 1


def test_train_runs_each_missing_run_in_order_and_keeps_the_earlier_runs_metrics(tmp_path, monkeypatch):
    stage = release.ReleaseStage("decoder", "decoder", "unclip_train.py", (), 1000, "text decoder",
                                 restarts=(release.WarmRestart(500, 1e-3, 2), release.WarmRestart(500, 1e-3, 3)))
    ran = []

    def fake_run(command):  # each run writes its metrics file, as unclip_train.py does at its end
        save_path = Path(command[command.index("--save_path") + 1])
        ran.append(save_path.stem)
        save_path.with_suffix(".json").write_text(json.dumps({"train_seconds": 60.0, "steps": int(command[command.index("--steps") + 1])}))

    monkeypatch.setattr(release, "STAGES", (release.STAGES[0], stage))  # the shipped CLIP, kept
    monkeypatch.setattr(release, "run", fake_run)
    (tmp_path / "decoder_first.json").write_text(json.dumps({"train_seconds": 120.0, "steps": 1000}))  # finished before an interruption
    metrics = release.train(release.WorkFiles(tmp_path, {"clip"}), release.RunSettings(tmp_path, tmp_path / "out", device="cpu"))
    assert ran == ["decoder_restart1", "decoder"]
    assert [run["steps"] for run in metrics["decoder"]["earlier_runs"]] == [1000, 500]
    assert release.training_minutes(metrics["decoder"]) == 4
    release.train(release.WorkFiles(tmp_path, {"clip"}), release.RunSettings(tmp_path, tmp_path / "out", device="cpu"))
    assert ran == ["decoder_restart1", "decoder"]  # a finished stage is not trained again


def test_compile_reaches_every_diffusion_run_and_not_clip(tmp_path):
    """release.py --compile / --no-compile: each unclip_train.py run (restarts too) gets the flag, clip_train.py (which has none)
    does not; without it the trainer keeps its own default (on CUDA only)."""
    clip, decoder = release.STAGES[0], release.STAGES[1]
    for compile, flag in ((True, "--compile"), (False, "--no-compile")):
        settings = release.RunSettings(tmp_path, tmp_path / "out", 0.1, 0, "cpu", tmp_path / "clip.pt", compile)
        runs = decoder.commands(settings)
        assert len(runs) == 2 and all(flag in command for _, command in runs)
        assert not {"--compile", "--no-compile"} & set(clip.command(settings))
    default = release.RunSettings(tmp_path, tmp_path / "out", 0.1, 0, "cpu")
    assert not {"--compile", "--no-compile"} & {flag for _, command in decoder.commands(default) for flag in command}


def test_the_style_release_keeps_its_shipped_stages_and_names_their_guidance_in_place_only(tiny_decoder_path, tmp_path):
    """release_style.py --keep clip decoder: the shipped files are measured again. A kept decoder whose file names
    another guidance is rewritten in place (the same weights) when the release goes there, once; a trial's copy names it
    and the shipped file stays as it was."""
    from utils.checkpoints import export_weights, load_checkpoint
    shipped_dir, work = tmp_path / "pretrained_style", tmp_path / "work"
    decoder = export_weights(tiny_decoder_path, shipped_dir / "decoder.safetensors", {"sampling": {"guidance_scale": 9.0}})
    (shipped_dir / "decoder.json").write_text(json.dumps({"steps": 4}))
    files = release.WorkFiles(work, {"clip", "decoder"}, release_style.STYLE_STAGES, shipped_dir)
    assert files("decoder.pt").resolve() == decoder.resolve() and files("clip.pt").resolve() == (shipped_dir / "clip.safetensors").resolve()
    assert files.stages == release_style.STYLE_STAGES
    wanted = release_style.DECODER.extra_fields()["sampling"]

    trial_dir = tmp_path / "trial"
    release_style.name_guidance(files, trial_dir)  # a trial: the shipped file is not touched
    assert load_checkpoint(decoder, "decoder")["sampling"] == {"guidance_scale": 9.0}
    copy = release_style.ship(files, release_style.DECODER, {"steps": 4}, trial_dir)
    assert load_checkpoint(copy, "decoder")["sampling"] == wanted and json.loads(copy.with_suffix(".json").read_text()) == {"steps": 4}

    before = load_checkpoint(decoder, "decoder")
    release_style.name_guidance(files, shipped_dir)
    after = load_checkpoint(decoder, "decoder")
    assert after["sampling"] == wanted and after["ema"].keys() == before["ema"].keys()
    assert all(torch.equal(after["ema"][k], before["ema"][k]) for k in before["ema"])
    written = decoder.stat().st_mtime_ns
    release_style.name_guidance(files, shipped_dir)  # it names it already: not written again, so its results stay fresh
    assert decoder.stat().st_mtime_ns == written
    assert release_style.ship(files, release_style.DECODER, {"steps": 4}, shipped_dir) == shipped_dir / "decoder.safetensors"
    assert decoder.stat().st_mtime_ns == written


def test_a_style_result_judged_at_another_guidance_is_measured_again(tmp_path):
    decoder, result = tmp_path / "decoder.safetensors", tmp_path / "attributes.json"
    decoder.write_bytes(b"")
    assert release_style.attributes_are_stale(result, decoder)  # missing
    result.write_text(json.dumps({"guidance_scale": release_style.GUIDANCE, "plain_per_prompt": 100}))
    assert not release_style.attributes_are_stale(result, decoder)
    result.write_text(json.dumps({"guidance_scale": release_style.GUIDANCE + 0.5, "plain_per_prompt": 100}))
    assert release_style.attributes_are_stale(result, decoder)
    result.write_text(json.dumps({"guidance_scale": release_style.GUIDANCE}))  # measured before the spread had its own count
    assert release_style.attributes_are_stale(result, decoder)


def test_keep_names_the_stages_that_do_not_ship(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(release_style, "SHIPPED_DIR", tmp_path)
    monkeypatch.setattr(sys, "argv", ["release_style.py", "--keep", "clip", "decoder"])
    with pytest.raises(SystemExit) as exit_:
        release_style.main()
    assert_one_line_error(capsys, exit_.value.code, f"{tmp_path} lacks clip, decoder")
