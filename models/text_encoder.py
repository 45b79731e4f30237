"""Character-level LSTM text encoder.

tokens [B, L] -> embedding [B, L, E] -> bidirectional LSTM over *packed*
sequences (padding is never read) -> a pooled state -> linear projection to
the CLIP space. Two poolings:

    final   the true final states of both directions (the first models)
    max     the maximum of each feature over the characters (InferSent's
            max pooling, Conneau et al. 2017): a word's features count
            wherever the word stands, so a sentence shape never seen in
            training ("this six is thick") still carries its class word

 The per-token LSTM outputs are also
returned, for decoders that cross-attend to the text (Imagen, latent diffusion).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from dataloading.character_tokenizer import TokenBatch

TEXT_POOLINGS = ("final", "max")


class TextEncoder(nn.Module):
    def __init__(self, vocab_size: int, embed_dim: int, char_dim: int = 32, hidden_dim: int = 64, num_layers: int = 1,
                 pooling: str = "final") -> None:
        super().__init__()
        assert pooling in TEXT_POOLINGS, pooling
        self.pooling = pooling
        self.char_embedding = nn.Embedding(vocab_size, char_dim, padding_idx=0)
        self.lstm = nn.LSTM(char_dim, hidden_dim, num_layers=num_layers, batch_first=True, bidirectional=True)
        self.projection = nn.Linear(2 * hidden_dim, embed_dim)
        self.token_dim = 2 * hidden_dim

    def forward(self, tokens: TokenBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (sentence embedding [B, D], token states [B, L, 2H]); states are zero on padding."""
        with torch.autocast(tokens.ids.device.type, enabled=False):  # the LSTM in fp32: under CUDA autocast cuDNN would run it in fp16
            return self.encode(tokens)

    def encode(self, tokens: TokenBatch) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.char_embedding(tokens.ids)  # [B, L, char_dim]
        packed = pack_padded_sequence(x, tokens.lengths.cpu(), batch_first=True, enforce_sorted=False)
        packed_out, (h_n, _) = self.lstm(packed)  # h_n: [layers * 2, B, H], each row's true last state
        states, _ = pad_packed_sequence(packed_out, batch_first=True, total_length=tokens.ids.shape[1])  # [B, L, 2H]
        if self.pooling == "final":
            pooled = torch.cat([h_n[-2], h_n[-1]], dim=-1)  # forward and backward final states: [B, 2H]
        else:
            padding = torch.arange(states.shape[1], device=states.device)[None, :] >= tokens.lengths.to(states.device, non_blocking=True)[:, None]  # [B, L]
            pooled = states.masked_fill(padding[..., None], float("-inf")).amax(dim=1)  # [B, 2H]
        return self.projection(pooled), states
