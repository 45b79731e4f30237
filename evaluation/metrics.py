"""Numbers that say how good the models are.

* CLIP: zero-shot accuracy and text->image retrieval precision@k.
* Generators: the Frechet distance between two sets of feature vectors
  (Heusel et al., 2017, eq. 6), used with a judge classifier's features.
* Super-resolution: PSNR and SSIM against the real full-size image.
"""
from __future__ import annotations

import numpy as np
import torch

from models.clip import encode_images
from models.prior import PRIOR_SAMPLING
from models.samplers import SamplingOptions


@torch.no_grad()
def class_text_embeddings(clip, prompts_per_class: list[list[str]]) -> torch.Tensor:
    """prompts[c][k] -> embeddings [K, C, D]: one set of class embeddings per prompt variant k."""
    num_variants = len(prompts_per_class[0])
    flat = [prompts_per_class[c][k] for k in range(num_variants) for c in range(len(prompts_per_class))]
    return clip.encode_text(flat).float().cpu().view(num_variants, len(prompts_per_class), -1)


def zero_shot_accuracy(image_embeddings: torch.Tensor, labels: torch.Tensor, text_embeddings: torch.Tensor) -> float:
    """Share of images whose most similar class prompt is their own, averaged over prompt variants.

    image_embeddings [N, D], labels [N], text_embeddings [K, C, D].
    """
    predictions = torch.einsum("nd,kcd->knc", image_embeddings, text_embeddings).argmax(dim=-1)  # [K, N]
    return (predictions == labels[None]).float().mean().item()


def retrieval_precision_at_k(image_embeddings: torch.Tensor, labels: torch.Tensor, text_embeddings: torch.Tensor, k: int = 10) -> float:
    """For each class prompt, the share of its k most similar images that belong to that class."""
    similarity = torch.einsum("nd,kcd->kcn", image_embeddings, text_embeddings)  # [K, C, N]
    top = similarity.topk(k, dim=-1).indices  # [K, C, k]
    classes = torch.arange(text_embeddings.shape[1])[None, :, None]
    return (labels[top] == classes).float().mean().item()


def evaluate_clip(clip, images: torch.Tensor, labels: torch.Tensor, captions) -> dict[str, float]:
    """Zero-shot accuracy and retrieval precision@10 per prompt form ("word", "numeral", "held_out")."""
    was_training = clip.training
    clip.eval()
    image_embeddings = encode_images(clip, images)
    results = {}
    for form in captions.eval_forms:
        text_embeddings = class_text_embeddings(clip, captions.prompts(form))
        results[f"zero_shot_{form}"] = zero_shot_accuracy(image_embeddings, labels, text_embeddings)
        results[f"retrieval_p10_{form}"] = retrieval_precision_at_k(image_embeddings, labels, text_embeddings, 10)
    clip.train(was_training)
    return results


def frechet_distance(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a^1/2 S_b S_a^1/2)^1/2) between two [N, F] feature sets.

    The matrix square root goes through symmetric eigendecompositions, which
    stay real and stable where a general ``sqrtm`` can return complex noise.
    """
    a = np.asarray(features_a, dtype=np.float64)
    b = np.asarray(features_b, dtype=np.float64)
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    eigval, eigvec = np.linalg.eigh(cov_a)
    sqrt_a = (eigvec * np.sqrt(eigval.clip(min=0))) @ eigvec.T  # S_a^1/2
    middle = sqrt_a @ cov_b @ sqrt_a  # symmetric PSD
    trace_sqrt = np.sqrt(np.linalg.eigvalsh(middle).clip(min=0)).sum()
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * trace_sqrt)


def psnr(images: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB per image, [N, C, H, W] in [-1, 1] -> [N]: 10 log10(peak^2 / MSE), peak = 2."""
    mse = (images.float() - reference.float()).pow(2).flatten(1).mean(1).clamp(min=1e-10)
    return 10 * torch.log10(4.0 / mse)


def ssim(images: torch.Tensor, reference: torch.Tensor, window: int = 7, sigma: float = 1.5) -> torch.Tensor:
    """Structural similarity per image (Wang et al. 2004, eq. 13), [N, C, H, W] in [-1, 1] -> [N].

    Local means, variances and covariance under a Gaussian window; constants
    C1 = (0.01 L)^2, C2 = (0.03 L)^2 for the data range L = 1 after mapping to [0, 1].
    A 7-pixel window (not the paper's 11) suits 28x28 images.
    """
    x, y = (images.float() + 1) / 2, (reference.float() + 1) / 2
    coords = torch.arange(window, dtype=torch.float32) - (window - 1) / 2
    g = torch.exp(-coords**2 / (2 * sigma**2))
    kernel = (g[:, None] * g[None, :] / g.sum() ** 2).expand(x.shape[1], 1, window, window)

    def blur(z: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.conv2d(z, kernel, groups=x.shape[1])

    mu_x, mu_y = blur(x), blur(y)
    var_x, var_y, cov = blur(x * x) - mu_x**2, blur(y * y) - mu_y**2, blur(x * y) - mu_x * mu_y
    c1, c2 = 0.01**2, 0.03**2
    index = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return index.flatten(1).mean(1)


def mean_pairwise_cosine(embeddings: torch.Tensor) -> float:
    """Mean cosine similarity over distinct pairs of rows of [K, D] unit vectors."""
    k = len(embeddings)
    gram = embeddings @ embeddings.T
    return ((gram.sum() - gram.diagonal().sum()) / (k * (k - 1))).item()


@torch.no_grad()
def prior_quality(prior, conditioner, splits, per_class: int = 50, sampling: SamplingOptions = PRIOR_SAMPLING, num_candidates: int = 1) -> dict:
    """How close the prior's generated image embeddings land to real ones (DALL-E 2's premise).

    For every class and name form ("six", "6"), ``per_class`` embeddings are drawn.
    Reported: the mean cosine similarity to held-out real image embeddings of the
    prompted class, beside the same for the raw text embedding (the modality gap)
    and for real images of the class among themselves (the target); the samples'
    similarity among themselves (diversity: real images score ``real_cosine_to_real``);
    and the share of generated embeddings whose nearest class, by CLIP text prompts
    (zero-shot) or by held-out class-mean image embedding, is the prompted one.
    """
    captions = splits.captions
    real = encode_images(conditioner.clip, splits.test_images)  # [N, D]
    class_means = torch.nn.functional.normalize(torch.stack([real[splits.test_labels == c].mean(0) for c in range(captions.num_classes)]), dim=-1)
    class_texts = class_text_embeddings(conditioner.clip, captions.prompts(captions.name_forms[0]))[0]  # [C, D]
    results: dict = {}
    for form in captions.name_forms:
        prompts = [p[0] for p in captions.prompts(form)]
        labels = torch.arange(len(prompts)).repeat_interleave(per_class)
        cond = conditioner.text([prompts[int(c)] for c in labels])
        generated, text = prior.sample(cond, sampling, num_candidates).cpu(), cond.embedding.cpu()  # [C * per_class, D] each

        def per_class_cosine(embeddings: torch.Tensor) -> list[float]:
            """Mean cosine between the embeddings for class c and the held-out real images of class c."""
            return [(embeddings[labels == c] @ real[splits.test_labels == c].T).mean().item() for c in range(len(prompts))]

        generated_cosine, text_cosine = per_class_cosine(generated), per_class_cosine(text)
        real_pairs = sum(mean_pairwise_cosine(real[splits.test_labels == c]) for c in range(len(prompts))) / len(prompts)
        generated_pairs = sum(mean_pairwise_cosine(generated[labels == c]) for c in range(len(prompts))) / len(prompts)
        results[form] = {
            "generated_cosine_to_real": sum(generated_cosine) / len(prompts), "text_cosine_to_real": sum(text_cosine) / len(prompts),
            # The baselines: real images of a class to each other; and the prior's samples for a class to each other
            # (above the real figure: the samples are less varied than real images of the class).
            "real_cosine_to_real": real_pairs, "generated_pairwise_cosine": generated_pairs,
            "zero_shot_accuracy": (generated @ class_texts.T).argmax(1).eq(labels).float().mean().item(),
            "nearest_class_mean_accuracy": (generated @ class_means.T).argmax(1).eq(labels).float().mean().item(),
            "per_class_generated_cosine": generated_cosine, "per_class_text_cosine": text_cosine,
        }
    return results
