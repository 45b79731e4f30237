"""Labels become varied text, so the text encoder learns language, not an index.

A ``CaptionSet`` knows, for each class, the names it may be called by
("six" or "6"), the templates used in training ("a handwritten {}") and a few
templates kept out of training, used only to test whether the text side
generalises to phrasings it never saw.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

DIGIT_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
DIGIT_NUMERALS = [str(d) for d in range(10)]

FASHION_NAMES = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot"]


def with_article(noun: str) -> str:
    """'an eight', 'a six', and 'a one': the article follows the sound, and "one" starts with a w sound."""
    return ("an " if noun[0] in "aeiou" and not noun.startswith("one") else "a ") + noun


@dataclass(frozen=True)
class CaptionSet:
    """Names and templates for one dataset.

    ``names[label]`` lists the ways a class is named; a caption picks one of
    them uniformly (for MNIST: the word and the numeral, 50/50) and puts it
    into a template; the bare name is itself a template ("{}").
    """

    dataset: str
    names: tuple[tuple[str, ...], ...]
    train_templates: tuple[str, ...]
    held_out_templates: tuple[str, ...]
    name_forms: tuple[str, ...]  # what each position of names[label] is called ("word", "numeral")

    @property
    def num_classes(self) -> int:
        return len(self.names)

    def sample(self, label: int, rng: random.Random) -> str:
        """A random training caption for ``label``."""
        return rng.choice(self.train_templates).format(rng.choice(self.names[label]))

    def prompts(self, form: str) -> list[list[str]]:
        """Prompts per class for one evaluation form.

        ``form`` is a name form ("word", "numeral"): the bare name, as a user
        types it; or "held_out": every held-out template with every name.
        Returns ``prompts[label]``, a list of one or more prompts.
        """
        if form in self.name_forms:
            k = self.name_forms.index(form)
            return [[names[k]] for names in self.names]
        if form == "held_out":
            return [[t.format(n) for t in self.held_out_templates for n in names] for names in self.names]
        raise ValueError(f"unknown prompt form {form!r}; expected one of {self.eval_forms}")

    @property
    def eval_forms(self) -> tuple[str, ...]:
        return self.name_forms + ("held_out",)

    def all_train_captions(self) -> list[str]:
        """Every caption ``sample`` can produce (for caching their embeddings)."""
        return sorted({t.format(n) for names in self.names for n in names for t in self.train_templates})


MNIST_CAPTIONS = CaptionSet(
    dataset="mnist",
    names=tuple(zip(DIGIT_WORDS, DIGIT_NUMERALS)),
    train_templates=("{}", "{}", "{}", "a {}", "the digit {}", "a handwritten {}", "the number {}",
                     "an image of a {}", "a picture of the number {}", "digit {}"),
    held_out_templates=("a drawing of a {}", "a photo of the digit {}", "this is a {}"),
    name_forms=("word", "numeral"),
)

FASHION_CAPTIONS = CaptionSet(
    dataset="fashion",
    names=tuple((with_article(n), n) for n in FASHION_NAMES),
    train_templates=("{}", "{}", "{}", "a photo of {}", "a picture of {}", "an image of {}", "clothing: {}"),
    held_out_templates=("a drawing of {}", "this is {}"),
    name_forms=("with_article", "bare"),
)

CAPTION_SETS = {"mnist": MNIST_CAPTIONS, "fashion": FASHION_CAPTIONS}
