"""A character-level tokenizer: small enough to read, robust to any input.

Every prompt is lower-cased and mapped one character at a time onto a fixed
alphabet. Four special ids frame and pad the sequence:

    PAD=0  fills a batch up to its longest sequence
    BOS=1  marks the start, EOS=2 the end
    UNK=3  stands for any character outside the alphabet (never an IndexError)

The vocabulary is stored inside every checkpoint (``to_dict``/``from_dict``), so
a model is always read with the tokenizer it was trained with.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch

DEFAULT_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789 -'.,!?/&"
SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>", "<unk>")


@dataclass
class TokenBatch:
    """A padded batch of token ids."""

    ids: torch.Tensor  # [B, L] long, PAD after each sequence's EOS
    lengths: torch.Tensor  # [B] long, number of real tokens (BOS..EOS); on the CPU, where pack_padded_sequence reads them

    @property
    def mask(self) -> torch.Tensor:
        """[B, L] bool, True on real tokens."""
        positions = torch.arange(self.ids.shape[1], device=self.ids.device)
        return positions[None, :] < self.lengths.to(self.ids.device, non_blocking=True)[:, None]

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "TokenBatch":
        """The ids on ``device``; the lengths stay on the CPU (reading them back from a GPU would wait for it)."""
        return TokenBatch(self.ids.to(device, non_blocking=non_blocking), self.lengths.cpu())


class CharTokenizer:
    PAD, BOS, EOS, UNK = 0, 1, 2, 3

    def __init__(self, alphabet: str = DEFAULT_ALPHABET, max_length: int = 48) -> None:
        if len(set(alphabet)) != len(alphabet):
            raise ValueError("alphabet has repeated characters")
        if max_length < 3:
            raise ValueError("max_length must leave room for BOS, one character and EOS")
        self.alphabet = alphabet
        self.max_length = max_length  # BOS and EOS included
        self._char_to_id = {c: i + len(SPECIAL_TOKENS) for i, c in enumerate(alphabet)}

    @property
    def vocab_size(self) -> int:
        return len(SPECIAL_TOKENS) + len(self.alphabet)

    def unknown_characters(self, text: str) -> set[str]:
        """The characters of ``text`` that would become UNK."""
        return {c for c in text.lower() if c not in self._char_to_id}

    def encode(self, text: str, warn: bool = True) -> list[int]:
        """Text -> [BOS, c_1, ..., c_n, EOS], truncated to ``max_length`` ids."""
        chars = text.lower()
        room = self.max_length - 2
        if len(chars) > room:
            if warn:
                warnings.warn(f"prompt of {len(chars)} characters truncated to {room}: {text[:room]!r}...")
            chars = chars[:room]
        return [self.BOS] + [self._char_to_id.get(c, self.UNK) for c in chars] + [self.EOS]

    def decode(self, ids: list[int] | torch.Tensor) -> str:
        """Ids -> text: PAD and BOS are dropped, EOS ends the text, UNK shows as '<unk>'."""
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        out = []
        for i in ids:
            if i in (self.PAD, self.BOS):
                continue
            if i == self.EOS:
                break
            out.append(SPECIAL_TOKENS[i] if i < len(SPECIAL_TOKENS) else self.alphabet[i - len(SPECIAL_TOKENS)])
        return "".join(out)

    def batch_encode(self, texts: list[str], warn: bool = True) -> TokenBatch:
        """Encode and right-pad a list of texts."""
        encoded = [self.encode(t, warn=warn) for t in texts]
        longest = max(len(e) for e in encoded)
        ids = torch.full((len(texts), longest), self.PAD, dtype=torch.long)
        for row, e in enumerate(encoded):
            ids[row, : len(e)] = torch.tensor(e)
        return TokenBatch(ids, torch.tensor([len(e) for e in encoded]))

    def to_dict(self) -> dict:
        return {"alphabet": self.alphabet, "max_length": self.max_length}

    @classmethod
    def from_dict(cls, d: dict) -> "CharTokenizer":
        return cls(alphabet=d["alphabet"], max_length=int(d["max_length"]))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CharTokenizer) and self.to_dict() == other.to_dict()
