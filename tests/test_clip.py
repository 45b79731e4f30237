import torch

from dataloading.captions import MNIST_CAPTIONS
from dataloading.character_tokenizer import CharTokenizer
from models.clip import MAX_LOGIT_SCALE, CLIPConfig, TinyCLIP, contrastive_loss
from models.pipeline import load_clip
from training.clip_trainer import ClipTrainingConfig, train_clip
from utils.checkpoints import load_checkpoint
from evaluation.metrics import evaluate_clip


def tiny_clip() -> TinyCLIP:
    torch.manual_seed(0)
    return TinyCLIP(CLIPConfig(embed_dim=16, image_width=8, char_dim=8, text_hidden_dim=16), CharTokenizer()).eval()


def test_shapes_and_unit_norm():
    clip = tiny_clip()
    images = torch.randn(5, 1, 28, 28)
    img = clip.encode_image(images)
    txt = clip.encode_text(["six", "a handwritten 6", "x", "zero", "one"])
    assert img.shape == (5, 16) and txt.shape == (5, 16)
    assert torch.allclose(img.norm(dim=-1), torch.ones(5), atol=1e-5)
    logits_i, logits_t = clip(images, clip.tokenizer.batch_encode(["a"] * 5))
    assert logits_i.shape == (5, 5) and torch.equal(logits_i.T, logits_t)


def test_three_channel_and_32px_images():
    clip = TinyCLIP(CLIPConfig(embed_dim=16, image_channels=3, image_size=32, image_width=8), CharTokenizer()).eval()
    assert clip.encode_image(torch.randn(2, 3, 32, 32)).shape == (2, 16)


def test_padding_does_not_change_the_embedding():
    clip = tiny_clip()
    alone = clip.encode_text(["six"])
    padded = clip.encode_text(["six", "a much longer prompt that pads the first one"])[:1]
    assert torch.allclose(alone, padded, atol=1e-6)
    _, states = clip.encode_tokens(clip.tokenizer.batch_encode(["six", "a much longer prompt"]))
    assert torch.all(states[0, 5:] == 0)  # packed sequences: padding is never read
    torch.manual_seed(0)
    max_pooled = TinyCLIP(CLIPConfig(embed_dim=16, image_width=8, char_dim=8, text_hidden_dim=16, text_pooling="max"), CharTokenizer()).eval()
    alone = max_pooled.encode_text(["six"])
    assert torch.allclose(alone, max_pooled.encode_text(["six", "a much longer prompt that pads the first one"])[:1], atol=1e-6)
    assert not torch.allclose(alone, clip.encode_text(["six"]), atol=1e-3)  # the same weights, pooled another way


def test_checkpoints_from_before_the_pooling_choice_load_as_final_pooling(tmp_path):
    payload = tiny_clip().checkpoint_payload()
    del payload["config"]["text_pooling"]  # what older checkpoints hold
    assert TinyCLIP.from_checkpoint(payload).config.text_pooling == "final"


def test_temperature_init_and_clamp():
    clip = tiny_clip()
    assert abs(clip.scale().item() - 1 / 0.07) < 1e-3
    with torch.no_grad():
        clip.logit_scale.fill_(10.0)
    assert clip.scale().item() == MAX_LOGIT_SCALE


def test_loss_prefers_aligned_pairs_and_ignores_same_class_negatives():
    torch.manual_seed(0)
    labels = torch.arange(8) % 4
    emb = torch.nn.functional.normalize(torch.randn(4, 16), dim=-1)[labels]
    aligned = contrastive_loss(20 * emb @ emb.T, labels)
    shuffled = contrastive_loss(20 * emb @ emb[torch.randperm(8)].T, labels)
    assert aligned < shuffled
    # Two images of one class matched to each other's caption cost nothing extra.
    swap = torch.tensor([4, 5, 6, 7, 0, 1, 2, 3])
    assert torch.allclose(contrastive_loss(20 * emb @ emb[swap].T, labels), aligned)


def test_short_training_lifts_zero_shot_far_above_chance(tiny_clip_path, embedded_splits):
    clip = load_clip(str(tiny_clip_path))
    results = evaluate_clip(clip, embedded_splits.test_images, embedded_splits.test_labels, MNIST_CAPTIONS)
    assert results["zero_shot_word"] > 0.5 and results["zero_shot_numeral"] > 0.5  # chance is 0.1


def test_checkpoint_round_trip_gives_identical_embeddings(tiny_clip_path, embedded_splits):
    data = load_checkpoint(tiny_clip_path, "clip")
    assert torch.load(tiny_clip_path, weights_only=True)["kind"] == "clip"
    a, b = TinyCLIP.from_checkpoint(data).eval(), load_clip(str(tiny_clip_path))
    images = embedded_splits.test_images[:16].float() / 127.5 - 1
    assert torch.equal(a.encode_image(images), b.encode_image(images))
    assert torch.equal(a.encode_text(["six", "7"]), b.encode_text(["six", "7"]))


class Interrupt(Exception):
    pass


def test_resume_after_interruption_matches_an_uninterrupted_run(tmp_path, embedded_splits):
    common = dict(epochs=2, train_subset=300, batch_size=100, output_dir=str(tmp_path / "plots"), seed=3)
    straight, _ = train_clip(ClipTrainingConfig(save_path=str(tmp_path / "a.pt"), **common), embedded_splits, log=lambda s: None)

    def interrupt_after_first_epoch(message: str) -> None:
        if message.startswith("epoch   1/"):
            raise Interrupt  # as if the process died right after the first checkpoint

    try:
        train_clip(ClipTrainingConfig(save_path=str(tmp_path / "b.pt"), **common), embedded_splits, log=interrupt_after_first_epoch)
    except Interrupt:
        pass
    assert load_checkpoint(tmp_path / "b.pt", "clip")["training"]["epoch"] == 1
    resumed, _ = train_clip(ClipTrainingConfig(save_path=str(tmp_path / "b.pt"), resume=True, **common), embedded_splits, log=lambda s: None)
    assert load_checkpoint(tmp_path / "b.pt", "clip")["training"]["epoch"] == 2
    images = embedded_splits.test_images[:32].float() / 127.5 - 1
    straight.eval(), resumed.eval()
    assert torch.allclose(straight.encode_image(images), resumed.encode_image(images), atol=1e-5)
    assert torch.allclose(straight.encode_text(["six", "a 7"]), resumed.encode_text(["six", "a 7"]), atol=1e-5)


def test_resume_with_more_epochs_stretches_the_learning_rate_schedule(tmp_path, embedded_splits):
    """A finished 1-epoch run continued with --epochs 2: its one-cycle schedule, planned for one epoch's steps,
    would raise "Tried to step ... times" on the next step; it is stretched over both epochs instead."""
    common = dict(train_subset=300, batch_size=100, output_dir=str(tmp_path / "plots"), save_path=str(tmp_path / "clip.pt"))
    train_clip(ClipTrainingConfig(epochs=1, **common), embedded_splits, log=lambda s: None)
    messages: list[str] = []
    _, metrics = train_clip(ClipTrainingConfig(epochs=2, resume=True, **common), embedded_splits, log=messages.append)
    state = load_checkpoint(tmp_path / "clip.pt", "clip")["training"]
    assert state["epoch"] == 2 and state["scheduler"]["total_steps"] == 6 and state["scheduler"]["last_epoch"] == 6
    assert any("now spans 6" in m for m in messages)
    steps = [step for step, _ in state["history"]["loss"]]
    assert steps == list(range(1, 7))  # the second epoch continued the step count
