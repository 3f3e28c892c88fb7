"""Text clean-up as OpenAI's CLIP tokenizer does it before BPE, for every place the package reads captions.

OpenAI's ``SimpleTokenizer.encode`` runs ``ftfy.fix_text``, HTML unescaping
(twice) and a whitespace collapse before byte-pair encoding; the Hugging Face
fast tokenizer does none of it. Without it "there isn’t a cat" (a curly
apostrophe) tokenizes as ``isn ’ t`` instead of ``isn 't`` and "&amp;" as
three tokens: other ids than the model was trained on, and a missed negation
cue. :func:`clean_text` is that clean-up; the tokenizer of
:func:`hf_negationclip.modeling.load_processor` and the corpus's cue detector
(:func:`hf_negationclip.corpus.negation_cues`) both apply it.
"""

from __future__ import annotations

import html
import re

import ftfy

_WHITESPACE = re.compile(r"\s+")
# printable ASCII without "&", plus ordinary whitespace: nothing for ftfy or html to change, only spaces to collapse
_PLAIN = re.compile(r"[\x20-\x25\x27-\x7e\t\n\r]*")


def clean_text(text: str) -> str:
    """``whitespace_clean(basic_clean(text))`` of OpenAI's CLIP tokenizer (lower-casing is left to the tokenizer).

    >>> clean_text("there  isn’t a cat &amp;amp; a dog ")
    "there isn't a cat & a dog"
    """
    if not _PLAIN.fullmatch(text):  # most captions are plain ASCII: skip ftfy's ~15 us per text
        text = html.unescape(html.unescape(ftfy.fix_text(text)))
    return _WHITESPACE.sub(" ", text).strip()
