"""The classifier two-sample test and the pixel statistics beside it."""
import torch

from evaluation.two_sample import as_saved, classifier_two_sample_test, pixel_statistics, real_sets, stratified_folds
from utils.images import to_signed_float


def halves(splits):
    """The held-out split cut into two halves with the same class mix: (images_a, labels_a, images_b, labels_b)."""
    first = torch.cat([(splits.test_labels == c).nonzero().squeeze(1)[::2] for c in range(10)])
    second = torch.cat([(splits.test_labels == c).nonzero().squeeze(1)[1::2] for c in range(10)])
    return splits.test_images[first], splits.test_labels[first], splits.test_images[second], splits.test_labels[second]


def test_two_halves_of_real_data_cannot_be_told_apart(embedded_splits):
    a, labels_a, b, labels_b = halves(embedded_splits)
    result = classifier_two_sample_test(a, b, labels_a, labels_b, steps=300)
    assert result["num_real"] == result["num_generated"] == 250
    assert 0.38 < result["accuracy"] < 0.62, result  # chance, within about 5 standard errors


def test_noise_is_told_from_real_data(embedded_splits):
    a, labels_a, _, _ = halves(embedded_splits)
    noise = torch.rand(len(a), 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1
    assert classifier_two_sample_test(noise, a, labels_a, labels_a, steps=100)["accuracy"] > 0.95


def test_a_faint_haze_is_found_although_it_is_invisible(embedded_splits):
    """Real digits with 0-10 grey levels added to every pixel, the haze of generated digits: the judge is built to ignore it."""
    a, labels_a, b, labels_b = halves(embedded_splits)
    haze = torch.rand(b.shape, generator=torch.Generator().manual_seed(0)) * 20 / 255  # [-1, 1] units: 20/255 of the range 2 is 10 levels
    hazy = (to_signed_float(b) + haze).clamp(-1, 1)
    assert classifier_two_sample_test(hazy, a, labels_b, labels_a, steps=300)["accuracy"] > 0.8  # measured: 0.94


def test_folds_keep_the_mix_and_pixels_are_counted_as_saved():
    fold = stratified_folds(torch.tensor([0] * 10 + [1] * 5), 5, torch.Generator().manual_seed(0))
    assert all(((fold == k) & (torch.arange(15) < 10)).sum() == 2 and ((fold == k) & (torch.arange(15) >= 10)).sum() == 1 for k in range(5))
    images = torch.tensor([-1.0, -0.999, 1.0, 0.99]).view(1, 1, 2, 2)  # -0.999 rounds to black, 0.99 to 254
    stats = pixel_statistics(images)
    assert stats["black"] == 0.5 and stats["saturated"] == 0.5 and abs(sum(stats["histogram"]) - 1) < 1e-6
    assert torch.equal(as_saved(images), to_signed_float(torch.tensor([0, 0, 255, 254], dtype=torch.uint8).view(1, 1, 2, 2)))


def test_real_sets_are_disjoint_held_out_first_and_balanced(embedded_splits):
    a, b, labels = real_sets(embedded_splits, per_class=60)
    assert a.shape == b.shape == (600, 1, 28, 28) and torch.equal(labels.bincount(), torch.full((10,), 60))
    assert torch.equal(a[:50], embedded_splits.test_images[embedded_splits.test_labels == 0])  # the held-out zeros come first
    flat_a, flat_b = a.flatten(1), b.flatten(1)
    assert not (flat_a[:, None] == flat_b[None]).all(-1).any()  # no image in both sets


def test_fewer_images_per_class_than_folds_leaves_no_image_unscored():
    """4 images per class and source against 5 folds: one fold is empty and is skipped, every image is still scored once."""
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(10).repeat_interleave(4)
    real = torch.rand(40, 1, 28, 28, generator=generator) * 0.1 - 1  # near-black squares
    generated = torch.rand(40, 1, 28, 28, generator=generator) * 2 - 1  # noise
    result = classifier_two_sample_test(generated, real, labels, labels, steps=30)
    assert 0 <= result["accuracy"] <= 1 and result["num_real"] == result["num_generated"] == 40
    assert result["accuracy"] > 0.9, result  # noise against near-black is easy even on 32 training images per fold
