import pytest
import torch

from dataloading.character_tokenizer import CharTokenizer


def test_round_trip_lowercases():
    tok = CharTokenizer()
    assert tok.decode(tok.encode("A Handwritten Six")) == "a handwritten six"
    assert tok.decode(tok.encode("the digit 7")) == "the digit 7"


def test_unknown_characters_become_unk_not_errors():
    tok = CharTokenizer()
    ids = tok.encode("six☃é")
    assert ids[-3:-1] == [tok.UNK, tok.UNK]
    assert max(ids) < tok.vocab_size
    assert tok.unknown_characters("six☃é") == {"☃", "é"}
    assert tok.decode(ids) == "six<unk><unk>"


def test_truncation_warns_and_keeps_bos_eos():
    tok = CharTokenizer(max_length=8)
    with pytest.warns(UserWarning, match="truncated"):
        ids = tok.encode("a very long prompt")
    assert len(ids) == 8 and ids[0] == tok.BOS and ids[-1] == tok.EOS
    assert tok.decode(ids) == "a very"


def test_empty_string_is_bos_eos():
    tok = CharTokenizer()
    assert tok.encode("") == [tok.BOS, tok.EOS]
    assert tok.decode(tok.encode("")) == ""


def test_batch_padding_lengths_and_mask():
    tok = CharTokenizer()
    batch = tok.batch_encode(["six", "a handwritten six"])
    assert batch.ids.shape == (2, len("a handwritten six") + 2)
    assert batch.lengths.tolist() == [5, 19]
    assert (batch.ids[0, 5:] == tok.PAD).all()
    assert batch.mask.sum(1).tolist() == [5, 19]


def test_serialisation_round_trip():
    tok = CharTokenizer(alphabet="abc ", max_length=10)
    again = CharTokenizer.from_dict(tok.to_dict())
    assert again == tok and again.encode("cab") == tok.encode("cab")


def test_rejects_bad_alphabet():
    with pytest.raises(ValueError):
        CharTokenizer(alphabet="aa")
    assert torch.tensor(CharTokenizer().encode("x")).dtype == torch.long
