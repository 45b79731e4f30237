"""The diffusion training loop: it learns, it resumes exactly where it stopped, and old checkpoints still load."""
from pathlib import Path

import pytest
import torch

import unclip_train
from conftest import ROOT, assert_one_line_error, run_cli
from models.conditioning import Conditioning
from models.pipeline import Decoder
from models.prior import PriorBundleConfig
from training import diffusion_trainer
from training.unclip_configs import PriorTrainingConfig, SuperResolutionTrainingConfig
from utils.checkpoints import load_checkpoint


def decoder_argv(clip_path, save_path: Path, *extra) -> list:
    return ["--clip_model_path", clip_path, "--channels", "8,16", "--batch_size", 8, "--train_subset", 64, "--sample_every", 0,
            "--max_minutes", 0, "--save_path", save_path, "--output_dir", save_path.parent / "out", *extra]


def test_the_loss_falls_on_a_tiny_run(tmp_path, tiny_clip_path):
    assert run_cli(unclip_train.main, decoder_argv(tiny_clip_path, tmp_path / "d.pt", "--steps", 120, "--warmup_steps", 5, "--save_every", 120)) == 0
    losses = [loss for _, loss in load_checkpoint(tmp_path / "d.pt", "decoder")["training"]["history"]["loss"]]
    first, last = sum(losses[:10]) / 10, sum(losses[-20:]) / 20  # at the start ~1: the zero-initialised head outputs 0, and v has unit variance
    assert len(losses) == 120 and last < 0.8 * first, (first, last)


def test_the_optimizer_and_density_options_reach_the_run(tmp_path, tiny_clip_path, capsys):
    argv = ("--steps", 3, "--adam_beta2", 0.99, "--timestep_density", "laplace", "--laplace_mean", 2, "--uniform_share", 0)
    assert run_cli(unclip_train.main, decoder_argv(tiny_clip_path, tmp_path / "d.pt", *argv)) == 0
    training = load_checkpoint(tmp_path / "d.pt", "decoder")["training"]
    assert list(training["optimizer"]["param_groups"][0]["betas"]) == [0.9, 0.99]
    assert_one_line_error(capsys, run_cli(unclip_train.main, decoder_argv(tiny_clip_path, tmp_path / "e.pt", "--adam_beta2", 1)), "--adam_beta2")


def test_an_interrupted_run_resumes_step_for_step(tmp_path, tiny_clip_path, monkeypatch):
    """Stopped after step 5 of 12 (mid-epoch: 64 images are 8 batches) and resumed, it ends where an uninterrupted run ends."""
    argv = ["--steps", 12, "--save_every", 1, "--extra_ema_decays", 0.9, 0.99]
    assert run_cli(unclip_train.main, decoder_argv(tiny_clip_path, tmp_path / "whole" / "d.pt", *argv)) == 0

    train_step = diffusion_trainer.DiffusionRun.train_step

    def interrupted(run, *args):
        if run.step == 5:
            raise KeyboardInterrupt  # what Ctrl-C does between two steps
        return train_step(run, *args)

    monkeypatch.setattr(diffusion_trainer.DiffusionRun, "train_step", interrupted)
    assert run_cli(unclip_train.main, decoder_argv(tiny_clip_path, tmp_path / "split" / "d.pt", *argv)) == 130
    assert load_checkpoint(tmp_path / "split" / "d.pt", "decoder")["training"]["step"] == 5
    monkeypatch.setattr(diffusion_trainer.DiffusionRun, "train_step", train_step)
    assert run_cli(unclip_train.main, decoder_argv(tiny_clip_path, tmp_path / "split" / "d.pt", *argv, "--resume")) == 0

    whole, split = (load_checkpoint(tmp_path / name / "d.pt", "decoder") for name in ("whole", "split"))
    assert whole["training"]["history"]["loss"] == split["training"]["history"]["loss"]  # the same 12 losses
    for key, value in whole["ema"].items():
        assert torch.equal(value, split["ema"][key]), key
    for decay in ("0.9", "0.99"):  # the extra EMAs resume too
        whole_extra, split_extra = (load_checkpoint(tmp_path / name / f"d_ema{decay}.pt", "decoder")["ema"] for name in ("whole", "split"))
        assert all(torch.equal(value, split_extra[key]) for key, value in whole_extra.items()), decay


def test_extra_emas_are_written_as_decoders_and_must_match_on_resume(tmp_path, tiny_clip_path, capsys):
    argv = decoder_argv(tiny_clip_path, tmp_path / "d.pt", "--steps", 30, "--extra_ema_decays", 0, 0.5, 0.99)
    assert run_cli(unclip_train.main, argv) == 0
    main, unaveraged, short, long = (Decoder.load(str(tmp_path / name)).model.state_dict() for name in ("d.pt", "d_ema0.pt", "d_ema0.5.pt", "d_ema0.99.pt"))
    last = load_checkpoint(tmp_path / "d.pt", "decoder")["training"]["model"]
    gap = {name: sum((w[k] - last[k]).abs().sum().item() for k in last) for name, w in (("0.5", short), ("main", main), ("0.99", long))}
    assert 0 < gap["0.5"] < gap["0.99"] and 0 < gap["0.5"] < gap["main"], gap  # a shorter average sits nearer the last weights
    assert all(torch.equal(unaveraged[k], last[k]) for k in last)  # decay 0: the last weights themselves
    resumed = decoder_argv(tiny_clip_path, tmp_path / "d.pt", "--steps", 40, "--resume", "--extra_ema_decays", 0, 0.5)
    assert_one_line_error(capsys, run_cli(unclip_train.main, resumed), "--extra_ema_decays")
    bad = decoder_argv(tiny_clip_path, tmp_path / "e.pt", "--extra_ema_decays", 1.5)
    assert_one_line_error(capsys, run_cli(unclip_train.main, bad), "--extra_ema_decays")


def test_a_decoder_saved_before_the_unet_levels_were_modules_loads_and_computes_the_same():
    """tests/fixtures/decoder_before_level_modules.pt was written by the code of e43a0ca, with its output on a probe input."""
    path = ROOT / "tests" / "fixtures" / "decoder_before_level_modules.pt"
    probe = load_checkpoint(path, "decoder")["probe"]
    decoder = Decoder.load(str(path))
    cond = Conditioning(probe["embedding"], probe["tokens"], probe["token_mask"])
    with torch.no_grad():
        output = decoder.model(probe["x"], probe["t"], cond)
    # Not bit for bit: the probe ran in training mode, where attention takes another kernel than in eval mode (~1e-6 apart).
    assert torch.allclose(output, probe["output"], atol=1e-5) and probe["output"].abs().max() > 1


@pytest.mark.parametrize("flag", ["--save_path", "--output_dir"])
def test_output_paths_are_checked_before_training(capsys, tmp_path, tiny_clip_path, flag):
    import clip_train
    folder, file = tmp_path / "a_folder", tmp_path / "a_file"
    folder.mkdir()
    file.write_text("")
    target, match = (folder, "is an existing folder") if flag == "--save_path" else (file, "is an existing file")
    assert_one_line_error(capsys, run_cli(clip_train.main, ["--epochs", 1, flag, target]), match)
    assert_one_line_error(capsys, run_cli(unclip_train.main, ["--clip_model_path", tiny_clip_path, flag, target]), match)
    assert_one_line_error(capsys, run_cli(unclip_train.main, ["--clip_model_path", tiny_clip_path, "--stage", "prior", flag, target]), match)
    assert not list(folder.iterdir()) and file.read_text() == ""  # nothing was trained or written


def test_each_stage_states_its_own_options(capsys):
    assert run_cli(unclip_train.main, ["--stage", "prior", "--help"]) == 0
    prior_help = capsys.readouterr().out
    assert "--prior_width" in prior_help and "--cross_attention" not in prior_help and "(default: 5000)" in prior_help
    assert run_cli(unclip_train.main, ["--help"]) == 0
    decoder_help = capsys.readouterr().out
    assert "--embedding_noise" in decoder_help and "--prior_width" not in decoder_help and "(default: 4000)" in decoder_help
    assert_one_line_error(capsys, run_cli(unclip_train.main, ["--stage", "decoder", "--prior_width", 64]), "unrecognized arguments: --prior_width")
    assert_one_line_error(capsys, run_cli(unclip_train.main, ["--stage", "upscaler"]), "invalid choice")


def test_stage_defaults_agree_with_the_model_configs():
    trained, built = PriorTrainingConfig(), PriorBundleConfig().schedule
    assert (built.prediction, built.min_snr_gamma) == (trained.prediction, trained.min_snr_gamma) == ("v", 5.0)
    superres = SuperResolutionTrainingConfig()
    assert (superres.channels, superres.min_snr_gamma, superres.max_minutes, superres.save_path) == ("32,48", 5.0, 6.0, "checkpoints/superres.pt")


def test_init_from_starts_from_another_runs_weights_with_a_fresh_schedule(tmp_path, tiny_clip_path, tiny_unclip_paths, capsys, monkeypatch):
    """--init_from: the network and its EMAs start as the given run's EMA; step count, history and optimizer start afresh."""
    assert run_cli(unclip_train.main, decoder_argv(tiny_clip_path, tmp_path / "a.pt", "--steps", 20, "--seed", 1)) == 0
    # One step at a vanishing learning rate: the weights can only have come from a.pt
    argv = decoder_argv(tiny_clip_path, tmp_path / "b.pt", "--steps", 1, "--lr", 1e-12, "--init_from", tmp_path / "a.pt", "--extra_ema_decays", 0.9)
    assert run_cli(unclip_train.main, argv) == 0
    source, started = load_checkpoint(tmp_path / "a.pt", "decoder"), load_checkpoint(tmp_path / "b.pt", "decoder")
    for weights in (started["ema"], started["training"]["model"], load_checkpoint(tmp_path / "b_ema0.9.pt", "decoder")["ema"]):
        assert all(torch.allclose(value, source["ema"][key], atol=1e-6) for key, value in weights.items())
    assert started["training"]["step"] == 1 and len(started["training"]["history"]["loss"]) == 1
    assert started["training"]["optimizer"]["state"][0]["step"] == 1  # Adam's moments are new, not a.pt's

    # Dropout shapes no weight: a restart may add it (the weights come from a.pt, the config keeps this run's rate)
    with_dropout = decoder_argv(tiny_clip_path, tmp_path / "d.pt", "--steps", 1, "--lr", 1e-12, "--init_from", tmp_path / "a.pt", "--dropout", 0.1)
    assert run_cli(unclip_train.main, with_dropout) == 0
    restarted = load_checkpoint(tmp_path / "d.pt", "decoder")
    assert restarted["config"]["unet"]["dropout"] == 0.1
    assert all(torch.allclose(value, source["ema"][key], atol=1e-6) for key, value in restarted["ema"].items())

    # A checkpoint that --resume finds takes precedence: its weights already began at --init_from
    monkeypatch.setattr(diffusion_trainer.DiffusionRun, "initialize_from", lambda run, path: pytest.fail("initialised a resumed run"))
    argv[argv.index("--steps") + 1] = 2
    assert run_cli(unclip_train.main, argv + ["--resume"]) == 0
    assert load_checkpoint(tmp_path / "b.pt", "decoder")["training"]["step"] == 2
    monkeypatch.undo()

    # Weights of another kind, another model or no file at all: one line, before training
    _, prior = tiny_unclip_paths
    for source_path, match in ((prior, "prior"), (tmp_path / "missing.pt", "missing.pt"), (tmp_path / "a.pt", "another model")):
        extra = ("--channels", "8,24") if source_path == tmp_path / "a.pt" else ()
        bad = decoder_argv(tiny_clip_path, tmp_path / "c.pt", "--steps", 1, "--init_from", source_path, *extra)
        assert_one_line_error(capsys, run_cli(unclip_train.main, bad), match)
        assert not (tmp_path / "c.pt").exists()
