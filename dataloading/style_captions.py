"""Captions that say how an image is drawn: "a thick six", "six, slanted right", "the digit 7 written thick and upright".

A ``StyleCaptions`` wraps a dataset's class captions (``CaptionSet``) and its measured attributes
(``dataloading.attributes``). For each training image it draws either a plain class caption (a third of the time,
so that "six" alone still means any six) or a caption naming the class and one or more of the image's attribute
terciles, in a random template and word order. Attributes go before the name as adjectives ("a thick six") or
after it as predicates ("a six slanted left").

Two things never appear in training, so that the benchmarks can test generalisation:

* **held-out phrasings**: the templates in ``held_out_templates`` ("this six is thick and upright");
* **held-out combinations**: the attribute pairs in ``held_out_pairs`` (for MNIST thick + slanted left and
  thin + slanted right) are never named in one training caption, though each half is.
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

import torch

from dataloading.attributes import DATASET_ATTRIBUTES, Attribute
from dataloading.captions import CAPTION_SETS, CaptionSet, with_article

# Template fields: {np} the noun phrase (adjectives + name), {a_np} the same with its article, {name} the bare name,
# {post} the predicates as "a, b and c", {list} the predicates joined by commas.
# "... that is ..." and "... which is ..." put the name inside a clause: without them CLIP's class reading fell to 77-86 %
# on the held-out "this six is wide" (BENCHMARKS.md, style captions, twelfth session).
MNIST_STYLE_TEMPLATES = ("{np}", "{a_np}", "{a_np} {post}", "{np} {post}", "{name}, {list}", "{a_np}, {list}",
                         "the digit {name} {post}", "a handwritten {np}", "an image of {a_np} {post}",
                         "{a_np} that is {post}", "{a_np}, which is {post}")
MNIST_STYLE_HELD_OUT = ("this {name} is {post}", "a drawing of {a_np}")
FASHION_STYLE_TEMPLATES = ("{np}", "{a_np}", "{a_np} {post}", "{name}, {list}", "a photo of {a_np}", "a picture of {a_np} {post}")
FASHION_STYLE_HELD_OUT = ("this {name} is {post}", "a drawing of {a_np}")

CAPTION_STYLES = ("class", "style")  # what a trainer's --captions may be
AttributeWord = tuple[str, int]  # (attribute name, tercile)


@dataclass(frozen=True)
class StyleCaptions:
    classes: CaptionSet
    attributes: tuple[Attribute, ...]
    train_templates: tuple[str, ...]
    held_out_templates: tuple[str, ...]
    held_out_pairs: tuple[tuple[AttributeWord, AttributeWord], ...]
    bare_names: tuple[str, ...]  # the name form without an article, per class ("six", "ankle boot")
    plain_share: float = 1 / 3
    max_chars: int = 46  # what the character tokenizer keeps (48 ids less BOS and EOS): longer captions name fewer attributes

    @property
    def dataset(self) -> str:
        return self.classes.dataset

    @property
    def num_classes(self) -> int:
        return self.classes.num_classes

    @property
    def names(self) -> tuple[tuple[str, ...], ...]:
        return self.classes.names

    @property
    def name_forms(self) -> tuple[str, ...]:
        return self.classes.name_forms

    @property
    def eval_forms(self) -> tuple[str, ...]:
        return self.classes.eval_forms

    def prompts(self, form: str) -> list[list[str]]:
        return self.classes.prompts(form)

    def all_train_captions(self) -> list[str]:
        """The plain class captions; style captions are too many to list and are encoded when first met."""
        return self.classes.all_train_captions()

    def is_held_out(self, named: dict[str, int]) -> bool:
        """Whether ``named`` ({attribute: tercile}) holds a combination never named together in training."""
        words = set(named.items())
        return any(a in words and b in words for a, b in self.held_out_pairs)

    def attribute_index(self, name: str) -> int:
        """The column of attribute ``name`` in the [N, A] attribute and tercile tensors."""
        return [a.name for a in self.attributes].index(name)

    def named_in(self, caption: str) -> dict[str, int]:
        """{attribute: tercile} for every attribute word in ``caption`` (a training caption or a user's prompt)."""
        return dict(_named_in(self, caption.lower()))

    def fits(self, labels: torch.Tensor, terciles: torch.Tensor, captions: list[str]) -> torch.Tensor:
        """[B images, B captions] bool: image i (labels [B], attribute terciles [B, A]) fits caption j when they share the
        label and every attribute the caption names is the image's. What CLIP's contrastive loss calls positives."""
        named = torch.full((len(captions), len(self.attributes)), -1, dtype=torch.long)  # -1: not named
        for j, caption in enumerate(captions):
            for name, tercile in self.named_in(caption).items():
                named[j, self.attribute_index(name)] = tercile
        agrees = (named[None] == -1) | (terciles[:, None, :] == named[None])  # [B, B, A]
        return (labels[:, None] == labels[None, :]) & agrees.all(-1)

    # ---------------------------------------------------------------- training captions
    def sample(self, label: int, rng: random.Random, terciles: Sequence[int] | None = None) -> str:
        """A training caption for an image of class ``label`` whose attributes fall in ``terciles`` (one per attribute)."""
        if terciles is None or rng.random() < self.plain_share:
            return self.classes.sample(label, rng)
        nameable = [(a.name, int(t)) for a, t in zip(self.attributes, terciles) if a.words(int(t))]
        if not nameable:
            return self.classes.sample(label, rng)
        chosen = [word for word in nameable if rng.random() < 0.5] or [rng.choice(nameable)]
        for a, b in self.held_out_pairs:
            if a in chosen and b in chosen:
                chosen.remove(rng.choice((a, b)))
        rng.shuffle(chosen)
        name = rng.choice(self.classes.names[label]) if self.dataset == "mnist" else self.bare_names[label]
        template = rng.choice(self.train_templates)
        caption = self.realise(template, name, dict(chosen), rng)
        while len(caption) > self.max_chars and len(chosen) > 1:
            chosen.pop()
            caption = self.realise(template, name, dict(chosen), rng)
        return caption

    # ---------------------------------------------------------------- benchmark prompts
    def prompt(self, label: int, named: dict[str, int], template: str = "{a_np}", name_form: int = 0) -> str:
        """A fixed prompt: the first word of every named attribute in ``template``, e.g. ({"thickness": 2}, "{a_np}") -> "a thick six"."""
        name = self.classes.names[label][name_form] if self.dataset == "mnist" else self.bare_names[label]
        return self.realise(template, name, named, rng=None)

    def realise(self, template: str, name: str, named: dict[str, int], rng: random.Random | None) -> str:
        """Fill ``template`` with ``name`` and the named attributes, each as an adjective or a predicate.

        A template without a predicate field takes every attribute as an adjective, one without a noun phrase takes
        predicates; one with both splits them at random (``rng``; without it, predicates where a word exists),
        keeping at least one predicate. ``rng`` also picks among synonyms (without it, the first word).
        """
        by_name = {a.name: a for a in self.attributes}
        has_post = "{post}" in template or "{list}" in template
        has_np = "{np}" in template or "{a_np}" in template
        pick = (lambda words: rng.choice(words)) if rng else (lambda words: words[0])
        adjectives, predicates = [], []
        for i, (attribute_name, tercile) in enumerate(named.items()):
            attribute = by_name[attribute_name]
            adjective_words, predicate_words = attribute.adjectives[tercile], attribute.predicates[tercile]
            if not adjective_words and not predicate_words:
                raise ValueError(f"the {attribute_name} tercile {tercile} has no words")
            as_predicate = has_post and (not has_np or not adjective_words or (rng.random() < 0.5 if rng else bool(predicate_words)))
            if as_predicate and not predicate_words:
                as_predicate = False
            (predicates if as_predicate else adjectives).append(pick(predicate_words if as_predicate else adjective_words))
        if has_post and not predicates and adjectives:  # a predicate template needs one: move the last adjective over
            last = list(named.items())[-1]
            adjectives.pop()
            predicates.append(pick(by_name[last[0]].predicates[last[1]] or by_name[last[0]].adjectives[last[1]]))
        noun_phrase = " ".join([*adjectives, name])
        post = " and ".join([", ".join(predicates[:-1]), predicates[-1]] if len(predicates) > 1 else predicates)  # "a, b and c"
        return template.format(np=noun_phrase, a_np=with_article(noun_phrase), name=name, post=post, list=", ".join(predicates))


@lru_cache(maxsize=65536)
def _named_in(style: StyleCaptions, caption: str) -> tuple[tuple[str, int], ...]:
    """The attribute words of ``caption`` as whole phrases ("slanted right" is not "upright"), cached per caption."""
    found = []
    for attribute in style.attributes:
        for tercile in range(3):
            if any(re.search(rf"(?<![\w-]){re.escape(word)}(?![\w-])", caption) for word in attribute.words(tercile)):
                found.append((attribute.name, tercile))
                break
    return tuple(found)


MNIST_STYLE = StyleCaptions(
    classes=CAPTION_SETS["mnist"], attributes=DATASET_ATTRIBUTES["mnist"],
    train_templates=MNIST_STYLE_TEMPLATES, held_out_templates=MNIST_STYLE_HELD_OUT,
    held_out_pairs=((("thickness", 2), ("slant", 0)), (("thickness", 0), ("slant", 2))),
    bare_names=tuple(names[0] for names in CAPTION_SETS["mnist"].names),
)
FASHION_STYLE = StyleCaptions(
    classes=CAPTION_SETS["fashion"], attributes=DATASET_ATTRIBUTES["fashion"],
    train_templates=FASHION_STYLE_TEMPLATES, held_out_templates=FASHION_STYLE_HELD_OUT,
    held_out_pairs=((("size", 2), ("brightness", 0)),),
    bare_names=tuple(names[1] for names in CAPTION_SETS["fashion"].names),
)
STYLE_CAPTION_SETS = {"mnist": MNIST_STYLE, "fashion": FASHION_STYLE}
