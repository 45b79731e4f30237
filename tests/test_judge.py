"""The judge behind the quality benchmarks: its augmentation, cache and reference."""
from __future__ import annotations

import torch

from utils.images import to_signed_float
from utils.checkpoints import load_checkpoint
import pytest

from evaluation.judge import JUDGE_RECIPE, Judge, QualityReference, judge_epochs, load_or_train_judge, random_photometric
from utils.checkpoints import save_checkpoint
from utils.errors import UserError


def test_photometric_augmentation_stays_in_range_and_can_be_switched_off(embedded_splits):
    images = to_signed_float(embedded_splits.train_images[:64])
    generator = torch.Generator().manual_seed(0)
    changed = random_photometric(images, generator, probability=1.0)
    assert changed.shape == images.shape and changed.min() >= -1 and changed.max() <= 1
    assert (changed != images).float().mean() > 0.5  # noise touches almost every pixel
    assert torch.equal(random_photometric(images, generator, probability=0.0), images)
    plain = random_photometric(images, generator, max_lift=0.0, max_noise=0.0, min_contrast=1.0, probability=1.0)
    assert torch.allclose(plain, images)


def test_background_lift_is_what_the_augmentation_adds(embedded_splits):
    images = to_signed_float(embedded_splits.train_images[:64])
    lifted = random_photometric(images, torch.Generator().manual_seed(0), max_lift=0.1, max_noise=0.0, min_contrast=1.0, probability=1.0)
    background = images == -1
    lift = lifted[background].view(-1)
    assert lift.min() >= -1 and lift.max() <= -0.9 and lift.mean() > -0.99


def test_cached_judge_of_another_recipe_is_retrained(embedded_splits, tmp_path):
    splits = embedded_splits.subset(200, seed=0)
    path = tmp_path / "judge.pt"
    load_or_train_judge(splits, path, recipe=1)
    assert load_checkpoint(path, "judge")["recipe"] == 1
    judge, accuracy = load_or_train_judge(splits, path)  # the current recipe: retrained, not the cached recipe-1 judge
    assert load_checkpoint(path, "judge")["recipe"] == JUDGE_RECIPE
    assert accuracy > 0.6  # it reads held-out digits (chance: 0.1), though trained on 200 only
    cached, cached_accuracy = load_or_train_judge(splits, path)  # the same recipe: read from the cache, not retrained
    assert cached_accuracy == accuracy and all(torch.equal(a, b) for a, b in zip(cached.state_dict().values(), judge.state_dict().values()))
    reference = QualityReference(judge, splits, per_class=5)
    assert reference.real["num_images"] == 50 and reference.real["frechet"] > 0


def test_the_real_baseline_is_a_mean_over_draws_of_real_images(embedded_splits):
    """One draw of real images gives a noisy real-vs-real distance; the ratio divides by the mean over several draws."""
    splits = embedded_splits.subset(600, seed=0)
    judge = untrained_judge()
    reference = QualityReference(judge, splits, per_class=5, draws=4)
    draws = reference.real["frechet_draws"]
    assert len(draws) == 4 and len(set(draws)) > 1  # the draws differ: each is another sample of real images
    assert reference.real["frechet"] == pytest.approx(sum(draws) / 4)
    assert reference.ratio(2 * reference.real["frechet"]) == pytest.approx(2.0)
    again = QualityReference(judge, splits, per_class=5, draws=4)
    assert again.real["frechet_draws"] == draws  # the same seed, the same draws: every model is judged against the same baseline


def untrained_judge():
    """A judge with random weights: its features are a fixed function of the pixels, enough to measure distances."""
    torch.manual_seed(0)
    return Judge().eval()


def test_a_cached_judge_of_another_dataset_is_an_error_not_overwritten(embedded_splits, tmp_path):
    path = save_checkpoint(tmp_path / "judge.pt", "judge", {"model": {}, "dataset": "fashion", "num_train": 60000, "test_accuracy": 0.9, "recipe": JUDGE_RECIPE})
    with pytest.raises(UserError, match="holds the judge of fashion, not mnist"):
        load_or_train_judge(embedded_splits, path)
    assert load_checkpoint(path, "judge")["dataset"] == "fashion"


def test_judge_epochs_see_about_the_same_images_for_any_split():
    assert judge_epochs(4500) == 40 and judge_epochs(60000) == 10 and judge_epochs(200) == 40
