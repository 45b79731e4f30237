"""TinyCLIP: a character LSTM and a CNN trained to agree (Radford et al., 2021).

Both encoders map into one D-dimensional space; embeddings are L2-normalised
and compared by cosine similarity scaled by a learned temperature
(logit_scale = log(1/0.07) at init, exp(logit_scale) clamped at 100, as in CLIP).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from dataloading.character_tokenizer import CharTokenizer, TokenBatch
from models.image_encoder import ImageEncoder
from models.text_encoder import TextEncoder
from utils.images import to_signed_float

MAX_LOGIT_SCALE = 100.0


@dataclass
class CLIPConfig:
    embed_dim: int = 64
    image_channels: int = 1
    image_size: int = 28
    image_width: int = 32  # channels of the CNN's first stage
    char_dim: int = 32
    text_hidden_dim: int = 64  # per direction; token states are 2x this
    text_layers: int = 1
    text_pooling: str = "final"  # models.text_encoder.TEXT_POOLINGS; checkpoints from before the choice existed pooled "final"


class TinyCLIP(nn.Module):
    def __init__(self, config: CLIPConfig, tokenizer: CharTokenizer) -> None:
        super().__init__()
        self.config = config
        self.tokenizer = tokenizer
        self.text_encoder = TextEncoder(tokenizer.vocab_size, config.embed_dim, config.char_dim, config.text_hidden_dim, config.text_layers,
                                        config.text_pooling)
        self.image_encoder = ImageEncoder(config.image_channels, config.embed_dim, config.image_width)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    @property
    def device(self) -> torch.device:
        return self.logit_scale.device

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """[B, C, H, W] in [-1, 1] -> unit-norm embeddings [B, D]."""
        return F.normalize(self.image_encoder(images).float(), dim=-1)  # normalised in fp32, also under autocast

    def encode_tokens(self, tokens: TokenBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (unit-norm embeddings [B, D], token states [B, L, 2H])."""
        embedding, states = self.text_encoder(tokens.to(self.device, non_blocking=True))  # from the tokenizer, on the CPU
        return F.normalize(embedding, dim=-1), states

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """List of prompts -> unit-norm embeddings [B, D]."""
        return self.encode_tokens(self.tokenizer.batch_encode(texts))[0]

    def scale(self) -> torch.Tensor:
        return self.logit_scale.exp().clamp(max=MAX_LOGIT_SCALE)

    def forward(self, images: torch.Tensor, tokens: TokenBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (logits_per_image [B, B], logits_per_text [B, B])."""
        image_embedding = self.encode_image(images)  # [B, D]
        text_embedding, _ = self.encode_tokens(tokens)  # [B, D]
        return self.logits(image_embedding, text_embedding)

    def logits(self, image_embedding: torch.Tensor, text_embedding: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Unit embeddings [B_img, D], [B_txt, D] -> (logits_per_image [B_img, B_txt], logits_per_text), in fp32 even under
        autocast: near the logit scale of 100, bf16's spacing is 0.5, coarser than the differences the loss learns from."""
        with torch.autocast(image_embedding.device.type, enabled=False):
            logits_per_image = self.scale().float() * image_embedding.float() @ text_embedding.float().T
        return logits_per_image, logits_per_image.T

    def checkpoint_payload(self) -> dict:
        return {"config": asdict(self.config), "tokenizer": self.tokenizer.to_dict(), "model": self.state_dict()}

    @classmethod
    def from_checkpoint(cls, data: dict) -> "TinyCLIP":
        model = cls(CLIPConfig(**data["config"]), CharTokenizer.from_dict(data["tokenizer"]))
        model.load_state_dict(data["model"])
        return model


@torch.no_grad()
def encode_images(clip: TinyCLIP, images: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """A whole image set, uint8 or float [N, C, H, W] -> unit-norm CLIP embeddings [N, D] on the CPU, in batches."""
    out = []
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size]
        batch = to_signed_float(batch) if batch.dtype == torch.uint8 else batch
        out.append(clip.encode_image(batch.to(clip.device)).float().cpu())
    return torch.cat(out)


def contrastive_loss(logits_per_image: torch.Tensor, labels: torch.Tensor, fits: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric cross-entropy over the similarity matrix [B images, B captions], with soft targets.

    CLIP's loss treats the diagonal as the only positive in each row. Here a
    batch of 256 drawn from 10 classes holds ~25 images of each digit, and the
    caption "six" fits all of them: calling the others negatives would push
    the model to separate images of one class by caption, which is noise. So
    the target of image row i spreads evenly over every caption j that fits it,
    and that of caption j over every image that fits it; the loss is the mean of
    the image->text and text->image cross-entropies (with one image per class
    it is exactly CLIP's). By default a caption fits every image of its label;
    ``fits`` [B, B] bool (image i, caption j) says more, e.g. that "a thick six"
    fits only the thick sixes (dataloading.style_captions.StyleCaptions.fits).
    """
    positives = (labels[:, None] == labels[None, :]) if fits is None else fits.to(labels.device, non_blocking=True)  # [B images, B captions]
    positives = positives.float()
    loss_images = F.cross_entropy(logits_per_image, positives / positives.sum(dim=1, keepdim=True))
    loss_texts = F.cross_entropy(logits_per_image.T, positives.T / positives.T.sum(dim=1, keepdim=True))
    return (loss_images + loss_texts) / 2
