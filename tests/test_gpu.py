"""The CUDA path: resume, interpolation, torch.compile, CPU/GPU agreement and generation. Skipped without a GPU
(the header of the pytest run says which device the session has)."""
from __future__ import annotations

import pytest
import torch

from conftest import run_cli
from utils.checkpoints import load_checkpoint

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_clip_resumes_on_cuda(tmp_path):
    import clip_train
    common = ["--device", "cuda", "--preset", "cpu", "--train_subset", 600, "--batch_size", 64, "--save_path", tmp_path / "clip.pt",
              "--output_dir", tmp_path / "plots"]
    assert run_cli(clip_train.main, common + ["--epochs", 1]) == 0
    assert run_cli(clip_train.main, common + ["--epochs", 2, "--resume"]) == 0  # the saved CPU random states meet a CUDA run
    assert load_checkpoint(tmp_path / "clip.pt", "clip")["training"]["epoch"] == 2


def test_decoder_resumes_and_compiles_on_cuda(tiny_clip_path, tmp_path):
    import unclip_train
    common = ["--device", "cuda", "--preset", "cpu", "--clip_model_path", tiny_clip_path, "--train_subset", 200, "--batch_size", 8,
              "--channels", "8,16", "--sample_every", 0, "--save_every", 2, "--save_path", tmp_path / "decoder.pt", "--output_dir", tmp_path / "out"]
    assert run_cli(unclip_train.main, common + ["--steps", 4, "--compile"]) == 0
    assert run_cli(unclip_train.main, common + ["--steps", 8, "--resume"]) == 0
    state = load_checkpoint(tmp_path / "decoder.pt", "decoder")["training"]
    assert state["step"] == 8 and state["noise_rng"].dtype == torch.uint8


def test_one_training_loss_agrees_between_cpu_and_gpu(tiny_clip_path, tmp_path):
    """The same weights, batch, timesteps and noise: the loss in fp32 on the CPU and under bf16 autocast on the GPU."""
    from training.diffusion_trainer import DiffusionRun
    from training.unclip_configs import DecoderTrainingConfig
    from utils.training import autocast
    run = DiffusionRun(DecoderTrainingConfig(clip_model_path=str(tiny_clip_path), device="cpu", train_subset=200, batch_size=16,
                                             channels="8,16", save_path=str(tmp_path / "d.pt"), output_dir=str(tmp_path / "o")))
    images, texts, _, indices = next(run.batches)
    x0, cond = run.stage.batch(images, texts, indices, run.generator)
    t = torch.randint(0, 1000, (len(x0),), generator=run.generator)
    noise = torch.randn(x0.shape, generator=run.generator)
    with torch.no_grad():
        for parameter in run.model.parameters():  # the zero-initialised output layers would make every output 0
            if parameter.ndim > 1 and not parameter.any():
                torch.nn.init.normal_(parameter, std=0.02)
        losses = {}
        for device in ("cpu", "cuda"):
            model = run.model.to(device)
            x0_d, t_d, noise_d, cond_d = x0.to(device), t.to(device), noise.to(device), cond.to(device)
            with autocast(torch.device(device)):
                output = model(run.schedule.q_sample(x0_d, t_d, noise_d), t_d, cond_d)
            losses[device] = run.schedule.loss(output, x0_d, noise_d, t_d).mean().item()
    assert losses["cuda"] == pytest.approx(losses["cpu"], rel=0.03)


def test_generation_and_interpolation_on_cuda(tiny_clip_path, tiny_decoder_path, tmp_path):
    import generate_images
    common = ["--device", "cuda", "--clip_model_path", tiny_clip_path, "--decoder_path", tiny_decoder_path, "--steps", 5]
    assert run_cli(generate_images.main, common + ["--prompt", "six", "--num_samples", 4, "--output", tmp_path / "six.png"]) == 0
    assert (tmp_path / "six.png").exists()
    assert run_cli(generate_images.main, common + ["--interpolate", "six", "seven", "--num_samples", 4,
                                                   "--output", tmp_path / "between.png"]) == 0  # slerp mixes GPU and CPU tensors
    assert (tmp_path / "between.png").exists()


def test_clip_logits_stay_float32_under_autocast():
    from dataloading.character_tokenizer import CharTokenizer
    from models.clip import CLIPConfig, TinyCLIP
    from utils.training import autocast
    model = TinyCLIP(CLIPConfig(), CharTokenizer()).cuda()
    with autocast(torch.device("cuda")):
        logits, _ = model(torch.zeros(4, 1, 28, 28, device="cuda"), model.tokenizer.batch_encode(["six", "a seven", "8", "one"]))
        _, states = model.encode_tokens(model.tokenizer.batch_encode(["six"]))
    assert logits.dtype == torch.float32 and states.dtype == torch.float32  # the LSTM, too, ran in fp32


def test_a_decoder_training_step_never_waits_for_the_gpu(tiny_clip_path, tmp_path):
    """No blocking copy, .item() or other host-device sync inside a step, so the host queues the next step while the GPU
    runs this one (a blocking copy of the conditioning made every step wait for the last: benchmarks/gpu.py's profile)."""
    from training.diffusion_trainer import DiffusionRun
    from training.unclip_configs import DecoderTrainingConfig
    run = DiffusionRun(DecoderTrainingConfig(clip_model_path=str(tiny_clip_path), device="cuda", train_subset=200, batch_size=16, channels="8,16",
                                             compile=False, save_path=str(tmp_path / "d.pt"), output_dir=str(tmp_path / "o")), log=lambda message: None)
    images, texts, _, indices = next(run.batches)
    run.train_step(images, texts, indices, run.model)  # the first step builds the optimizer state and the schedule's device tables
    images, texts, _, indices = next(run.batches)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        run.train_step(images, texts, indices, run.model)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert run.step == 2
