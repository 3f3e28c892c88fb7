"""`datasets` builder for the negated-caption corpus written by `hf-negationclip corpus`.

datasets 5 no longer runs loading scripts through `load_dataset`, so use the
class directly (or, better, the parquet export: `hf-negationclip export-corpus`)::

    from negation_captions import NegationCaptions
    builder = NegationCaptions(config_name="combined", data_dir="runs/corpus")
    builder.download_and_prepare()
    ds = builder.as_dataset()

``data_dir`` is the corpus folder (``negated_captions_<split>.json`` + ``distractors/``);
source images are found through the folder recorded in each JSON (``info.image_dir``).
"""

from pathlib import Path

import datasets

from hf_negationclip.corpus.export import CONFIGS, corpus_features, corpus_splits, iter_corpus_rows

_DESCRIPTION = "Captions that state what an image does not contain, with minimal-pair distractor images."


class NegationCaptions(datasets.GeneratorBasedBuilder):
    """Configs: pipeline1 (absent objects), pipeline2 (VQA "no" answers), combined (both)."""

    BUILDER_CONFIGS = [
        datasets.BuilderConfig(name=name, description=f"pipelines: {', '.join(p)}") for name, p in CONFIGS.items()
    ]
    DEFAULT_CONFIG_NAME = "combined"

    def _info(self):
        return datasets.DatasetInfo(description=_DESCRIPTION, features=corpus_features())

    def _split_generators(self, dl_manager):
        data_dir = Path(self.config.data_dir or "")
        if not data_dir.is_dir():
            raise FileNotFoundError(
                f"data_dir={self.config.data_dir!r} is not a corpus folder: run "
                "`hf-negationclip corpus --output_dir DIR` and pass data_dir=DIR"
            )
        return [
            datasets.SplitGenerator(name=split, gen_kwargs={"data_dir": data_dir, "split": split})
            for split in corpus_splits(data_dir)
        ]

    def _generate_examples(self, data_dir, split):
        yield from enumerate(iter_corpus_rows(data_dir, split, CONFIGS[self.config.name]))
