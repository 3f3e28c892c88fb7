"""NegRefCOCOg as a ``datasets`` builder (configs ``refcocog``, ``official``, ``scene``).

datasets 5 no longer runs loading scripts through ``load_dataset``, so use the class
directly (or, better, the parquet export: ``hf-negationclip negrefcocog``)::

    from negrefcocog import NegRefCOCOg
    builder = NegRefCOCOg(config_name="scene", data_dir="runs/world")
    builder.download_and_prepare()
    ds = builder.as_dataset(split="test")

``data_dir`` (and ``image_dir=`` for ``refcocog`` / ``official``) as in README.md here; the
samples come from ``hf_negationclip.benchmarks.negrefcocog`` (package code, so the same
reader serves the builder, the parquet export and the evaluation harness).
"""

import datasets

from hf_negationclip.benchmarks.negrefcocog import CONFIGS, SPLIT, check_config, features, iter_examples

_DESCRIPTION = "Referring expressions with negation, each with its box and the same-category boxes of its image."


class NegRefCOCOgConfig(datasets.BuilderConfig):
    """A config name plus where the COCO images are (``image_dir``) and the candidate-shuffling ``seed``."""

    def __init__(self, image_dir: str | None = None, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.image_dir, self.seed = image_dir, seed


class NegRefCOCOg(datasets.GeneratorBasedBuilder):
    """Configs: refcocog (a RefCOCOg download), official (the published NegRefCOCOg.json), scene (a scene world)."""

    BUILDER_CONFIG_CLASS = NegRefCOCOgConfig
    BUILDER_CONFIGS = [NegRefCOCOgConfig(name=name, version=datasets.Version("1.0.0")) for name in CONFIGS]
    DEFAULT_CONFIG_NAME = "scene"

    def _info(self):
        return datasets.DatasetInfo(description=_DESCRIPTION, features=features(), license="MIT (annotations)")

    def _split_generators(self, dl_manager):
        if not self.config.data_dir:
            raise ValueError(f"NegRefCOCOg {self.config.name}: pass data_dir= (see README.md)")
        check_config(self.config.name, self.config.data_dir, self.config.image_dir)
        return [datasets.SplitGenerator(name=SPLIT)]

    def _generate_examples(self):
        yield from iter_examples(self.config.name, self.config.data_dir, self.config.image_dir, self.config.seed)
