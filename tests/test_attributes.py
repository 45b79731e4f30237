"""Style attributes (dataloading/attributes.py) and the captions that name them (dataloading/style_captions.py)."""
from __future__ import annotations

import json
import random
import re
import sys
from pathlib import Path

import pytest
import torch

from conftest import assert_one_line_error, run_cli
from dataloading.attributes import (DATASET_ATTRIBUTES, AttributeBins, deskewed_width, measure, skeletonize, slant_degrees,
                                    stroke_thickness, synthetic_stroke)
from dataloading.style_captions import MNIST_STYLE, STYLE_CAPTION_SETS
from evaluation.attributes import attribute_shares, pair_auc, tercile_shares

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import attributes as benchmark  # noqa: E402  benchmarks/attributes.py

THICK_WORDS, THIN_WORDS = ("thick", "bold"), ("thin",)
LEFT_WORDS, RIGHT_WORDS = ("left-slanted", "slanted left", "leaning left"), ("right-slanted", "slanted right", "leaning right")


def says(caption: str, words: tuple[str, ...]) -> bool:
    return any(w in caption for w in words)


@pytest.mark.parametrize("slant", [-15.0, 0.0, 15.0])
@pytest.mark.parametrize("shape_width", [0.0, 10.0])  # a bar, a box outline
def test_thickness_of_synthetic_strokes(slant, shape_width):
    measured = [float(stroke_thickness(synthetic_stroke(thickness=t, slant=slant, width=shape_width))) for t in (1, 2, 3, 4, 5, 6)]
    for true, value in zip((1, 2, 3, 4, 5, 6), measured):
        assert abs(value - true) < 0.8, (true, measured)  # a sheared stroke is thinner across than along a row
    assert measured == sorted(measured)


def test_slant_of_synthetic_strokes():
    for degrees in (-25, -10, 0, 10, 25):
        for thickness in (2, 4):
            assert abs(float(slant_degrees(synthetic_stroke(thickness=thickness, slant=degrees))) - degrees) < 1.5


def test_width_grows_with_the_shape_and_ignores_slant():
    widths = {w: [float(deskewed_width(synthetic_stroke(thickness=2, width=w, slant=s))) for s in (-15, 0, 15)] for w in (4, 8, 12)}
    assert widths[4][1] < widths[8][1] < widths[12][1]
    for values in widths.values():
        assert max(values) - min(values) < 0.5, widths


def test_skeleton_is_one_pixel_wide_and_keeps_the_bar():
    bar = synthetic_stroke(thickness=5, length=16)[:, 0] >= 128  # [1, 28, 28]
    skeleton = skeletonize(bar)
    rows = skeleton[0].sum(1)  # skeleton pixels per row
    assert rows.max() == 1 and rows.sum() >= 10  # one pixel per row, most of the bar's height kept
    assert not (skeleton & ~bar).any()
    assert skeletonize(torch.zeros(2, 28, 28, dtype=torch.bool)).sum() == 0


def test_terciles_split_each_class_in_thirds(embedded_splits):
    terciles, labels = embedded_splits.terciles("train"), embedded_splits.train_labels  # [N, A]
    for c in (0, 6):
        for a in range(terciles.shape[1]):
            shares = torch.bincount(terciles[labels == c, a], minlength=3).float() / (labels == c).sum()
            assert (shares - 1 / 3).abs().max() < 0.02, shares
    held_out = torch.bincount(embedded_splits.terciles("test")[:, 0], minlength=3).float() / len(embedded_splits.test_labels)
    assert (held_out - 1 / 3).abs().max() < 0.08  # held-out images binned by the training split's edges


def test_bins_of_a_class_without_images_fall_back_to_all():
    values, labels = torch.arange(30, dtype=torch.float32)[:, None], torch.zeros(30, dtype=torch.long)
    bins = AttributeBins.fit(values, labels, 2, DATASET_ATTRIBUTES["mnist"][:1])
    assert torch.equal(bins.edges[0], bins.edges[1])
    assert bins.terciles(torch.tensor([[0.0], [15.0], [29.0]]), torch.tensor([1, 1, 1])).flatten().tolist() == [0, 1, 2]


def test_fashion_attributes_measure_size_and_brightness():
    small, large = torch.zeros(1, 1, 28, 28, dtype=torch.uint8), torch.zeros(1, 1, 28, 28, dtype=torch.uint8)
    small[..., 10:14, 10:14], large[..., 4:24, 4:24] = 200, 120
    values = measure(torch.cat([small, large]), DATASET_ATTRIBUTES["fashion"])  # [2, (size, brightness)]
    assert values[0, 0] < values[1, 0] and values[0, 1] > values[1, 1]


def training_captions(style, n: int, seed: int = 0) -> list[tuple[list[int], str]]:
    rng = random.Random(seed)
    draws = []
    for _ in range(n):
        terciles = [rng.randrange(3) for _ in style.attributes]
        draws.append((terciles, style.sample(rng.randrange(style.num_classes), rng, terciles)))
    return draws


def test_style_captions_name_the_images_own_terciles_and_every_word():
    draws = training_captions(MNIST_STYLE, 20000)
    words = {w for a in MNIST_STYLE.attributes for t in range(3) for w in a.words(t)}
    joined = " | ".join(c for _, c in draws)
    assert all(w in joined for w in words), [w for w in words if w not in joined]
    for (thickness, slant, width), caption in draws:
        if says(caption, THICK_WORDS):
            assert thickness == 2, caption
        if says(caption, THIN_WORDS):
            assert thickness == 0, caption
        if says(caption, LEFT_WORDS):
            assert slant == 0, caption
        if says(caption, RIGHT_WORDS):
            assert slant == 2, caption
        if "narrow" in caption or "wide" in caption:
            assert width == (0 if "narrow" in caption else 2), caption
        assert len(caption) <= MNIST_STYLE.max_chars
    plain = sum(not any(w in c for w in words) for _, c in draws) / len(draws)
    assert 0.3 < plain < 0.45  # a third plain class captions, plus a few of images whose nameable words were not drawn


def test_held_out_phrasings_and_combinations_never_train():
    for style in STYLE_CAPTION_SETS.values():
        captions = [c for _, c in training_captions(style, 20000, seed=1)]
        assert not any(c.startswith("this ") or c.startswith("a drawing of") for c in captions)
    mnist = [c for _, c in training_captions(MNIST_STYLE, 20000, seed=2)]
    assert not any(says(c, THICK_WORDS) and says(c, LEFT_WORDS) for c in mnist)
    assert not any(says(c, THIN_WORDS) and says(c, RIGHT_WORDS) for c in mnist)
    assert any(says(c, THICK_WORDS) and says(c, RIGHT_WORDS) for c in mnist)  # the other pairings do train
    assert MNIST_STYLE.is_held_out({"thickness": 2, "slant": 0}) and not MNIST_STYLE.is_held_out({"thickness": 2, "slant": 2})


def test_benchmark_prompts():
    assert MNIST_STYLE.prompt(6, {"thickness": 2}) == "a thick six"
    assert MNIST_STYLE.prompt(6, {"thickness": 0}) == "a thin six"
    assert MNIST_STYLE.prompt(6, {"slant": 0}, "{a_np} {post}") == "a six slanted left"
    assert MNIST_STYLE.prompt(6, {"slant": 2}, "{a_np} {post}") == "a six slanted right"
    assert MNIST_STYLE.prompt(7, {"thickness": 2, "slant": 1}, "the digit {name} {post}") == "the digit seven written thick and upright"
    assert MNIST_STYLE.prompt(3, {"slant": 0}, "this {name} is {post}", name_form=1) == "this 3 is slanted left"
    assert STYLE_CAPTION_SETS["fashion"].prompt(9, {"size": 2}) == "a large ankle boot"


def test_attribute_shares_of_real_and_of_uniform_images(embedded_splits):
    """Held-out real digits fill each tercile about equally; copies of one image all land in the same one."""
    splits = embedded_splits
    real = attribute_shares(splits.test_images, splits.test_labels, splits)  # {attribute: [low, middle, high]}
    assert set(real) == {"thickness", "slant", "width"}
    assert all(abs(sum(shares) - 1) < 1e-6 and max(abs(v - 1 / 3) for v in shares) < 0.08 for shares in real.values()), real
    copies = attribute_shares(splits.test_images[:1].repeat(20, 1, 1, 1), splits.test_labels[:1].repeat(20), splits)
    assert all(sorted(shares) == [0.0, 0.0, 1.0] for shares in copies.values()), copies
    assert tercile_shares(torch.tensor([0, 0, 2, 1])) == [0.5, 0.25, 0.25]


def test_pair_auc():
    assert pair_auc(torch.tensor([2.0, 3.0]), torch.tensor([0.0, 1.0])) == 1.0
    assert pair_auc(torch.tensor([0.0]), torch.tensor([1.0])) == 0.0
    assert pair_auc(torch.tensor([1.0]), torch.tensor([1.0])) == 0.5
    assert pair_auc(torch.tensor([]), torch.tensor([1.0])) != pair_auc(torch.tensor([]), torch.tensor([1.0]))  # nan


def test_style_captions_train_clip_and_a_decoder(tmp_path):
    import json

    import clip_train
    import unclip_train
    clip_path = tmp_path / "clip.pt"
    assert run_cli(clip_train.main, ["--captions", "style", "--train_subset", 300, "--epochs", 1, "--batch_size", 64,
                                     "--save_path", clip_path, "--output_dir", tmp_path / "plots"]) == 0
    retrieval = json.loads(clip_path.with_suffix(".json").read_text())["attribute_retrieval"]
    assert set(retrieval) == {"adjective", "predicate", "held_out: this {name} is {post}", "held_out: a drawing of {a_np}"}
    assert set(retrieval["adjective"]) == {"thickness", "slant", "width"}
    assert all(0 <= s["mean"] <= 1 for s in retrieval["adjective"].values())
    decoder = tmp_path / "decoder.pt"
    common = ["--clip_model_path", clip_path, "--steps", 2, "--batch_size", 8, "--channels", "8,16", "--train_subset", 200,
              "--sample_every", 0, "--save_path", decoder, "--output_dir", tmp_path / "out"]
    assert run_cli(unclip_train.main, common + ["--captions", "style", "--cross_attention"]) == 0
    assert decoder.exists()


def test_resume_with_other_captions_is_refused(tmp_path, tiny_clip_path, capsys):
    import unclip_train
    decoder = tmp_path / "decoder.pt"
    common = ["--clip_model_path", tiny_clip_path, "--batch_size", 8, "--channels", "8,16", "--train_subset", 200,
              "--sample_every", 0, "--save_path", decoder, "--output_dir", tmp_path / "out"]
    assert run_cli(unclip_train.main, common + ["--steps", 2]) == 0
    capsys.readouterr()
    code = run_cli(unclip_train.main, common + ["--steps", 4, "--resume", "--captions", "style"])
    assert_one_line_error(capsys, code, "--captions class, not style")


def test_unknown_attribute_words_are_text_like_any_other(tiny_clip_path, tiny_decoder_path, tmp_path):
    import generate_images
    for prompt in ("a sparkly six leaning sideways", "a thick six slanted left", "this 3 is wide"):
        assert run_cli(generate_images.main, ["--prompt", prompt, "--clip_model_path", tiny_clip_path, "--decoder_path", tiny_decoder_path,
                                              "--num_samples", 2, "--steps", 2, "--output", tmp_path / "grid.png"]) == 0, prompt
        assert (tmp_path / "grid.png").exists()


def test_attribute_words_are_read_as_whole_phrases():
    assert MNIST_STYLE.named_in("a thick six slanted left") == {"thickness": 2, "slant": 0}
    assert MNIST_STYLE.named_in("an upright 6") == {"slant": 1}  # "upright" is not "right"
    assert MNIST_STYLE.named_in("a right-slanted thin 3") == {"thickness": 0, "slant": 2}
    assert MNIST_STYLE.named_in("the digit 7 written thick and upright") == {"thickness": 2, "slant": 1}
    assert MNIST_STYLE.named_in("a thinly drawn six") == {} and MNIST_STYLE.named_in("six") == {}
    for terciles, caption in training_captions(MNIST_STYLE, 2000, seed=3):  # what a caption names is the image's
        assert all(terciles[MNIST_STYLE.attribute_index(n)] == t for n, t in MNIST_STYLE.named_in(caption).items()), caption


def test_a_style_caption_fits_only_images_with_its_attributes():
    from models.clip import contrastive_loss
    labels = torch.tensor([6, 6, 6, 3])
    terciles = torch.tensor([[2, 0, 1], [0, 0, 1], [2, 2, 1], [2, 0, 1]])  # thick left, thin left, thick right, a thick left three
    fits = MNIST_STYLE.fits(labels, terciles, ["a thick six", "six slanted left", "a six", "a three"])
    assert fits.int().tolist() == [[1, 1, 1, 0], [0, 1, 1, 0], [1, 0, 1, 0], [0, 0, 0, 1]]
    logits = torch.randn(4, 4)
    assert torch.allclose(contrastive_loss(logits, labels), contrastive_loss(logits, labels, labels[:, None] == labels[None, :]))
    aligned = 10 * fits.float()  # similarities high exactly where captions fit
    assert contrastive_loss(aligned, labels, fits) < contrastive_loss(10 * (~fits).float(), labels, fits)


def test_nothing_named_has_its_own_image_count_and_stays_out_of_the_class_accuracy(embedded_splits):
    """The spread of style is measured on --plain_per_prompt images per digit, with its largest gap from the real shares
    and a share's standard error; the judge's class accuracy counts attribute prompts only."""
    style = MNIST_STYLE
    plain_prompts = {names[0] for names in style.classes.names}
    class_of = {name: c for c, names in enumerate(style.classes.names) for name in names}

    class Pipeline:  # real held-out digits for any prompt; remembers what it was asked
        sampling = benchmark.SamplingOptions(seed=3)

        def __init__(self):
            self.counts, self.prompt, self.plain_seeds = [], "", []

        def __call__(self, prompts, seed=None):
            self.counts.append(len(prompts))
            if len(prompts) == 5:
                self.plain_seeds.append(seed)
            else:
                assert seed is None  # the adherence pairs share the run's noise
            self.prompt = prompts[0]
            return embedded_splits.test_images[:len(prompts)]

    pipeline = Pipeline()

    class Judge:  # right on every attribute prompt, wrong on every plain one
        def predict(self, images):
            c = next(class_of[w] for w in re.findall(r"\w+", pipeline.prompt) if w in class_of)
            return torch.full((len(images),), (c + 1) % 10 if pipeline.prompt in plain_prompts else c), None

    third = {a.name: [1 / 3] * 3 for a in style.attributes}
    result = benchmark.evaluate(pipeline, embedded_splits, style, Judge(), per_prompt=2, plain_per_prompt=5, real=third)
    assert result["class_accuracy"] == 1.0 and result["class_accuracy_by_named"]["plain"] == 0.0
    assert pipeline.counts.count(5) == 10 and set(pipeline.counts) == {2, 5}
    assert pipeline.plain_seeds == list(range(301, 311))  # each digit its own noise: independent draws
    for spread in result["no_attribute_named"].values():
        assert abs(sum(spread["shares"]) - 1) < 1e-6
        assert spread["largest_gap"] == pytest.approx(max(abs(s - 1 / 3) for s in spread["shares"]))
        assert spread["standard_error"] == pytest.approx((2 / 9 / 50) ** 0.5)


def test_attributes_benchmark_runs_end_to_end(tiny_clip_path, tiny_decoder_path, tmp_path):
    judge = Path(__file__).resolve().parent.parent / "pretrained" / "judge.safetensors"
    argv = ["--clip_model_path", tiny_clip_path, "--decoder_path", tiny_decoder_path, "--judge_path", judge, "--per_prompt", 2,
            "--plain_per_prompt", 3, "--steps", 2, "--seed", 4, "--device", "cpu", "--name", "attrs", "--folder", tmp_path]
    assert run_cli(benchmark.main, argv) == 0
    result = json.loads((tmp_path / "attrs.json").read_text())
    assert result["plain_per_prompt"] == 3 and result["seed"] == 4
    text = result["results"]["text decoder"]
    assert set(text["no_attribute_named"]) == {"thickness", "slant", "width"} and 0 <= text["class_accuracy"] <= 1
    assert set(text["adherence"]["adjective"]) == {"thickness", "slant", "width"}
