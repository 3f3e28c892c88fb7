"""NegRefCOCOg as a ``datasets`` builder (configs ``refcocog``, ``official``, ``scene``).

The builder lives in the installed package (``hf_negationclip.benchmarks.negrefcocog``)
so it works after ``pip install``; this file only names it for the builder layout.
datasets 5 no longer runs loading scripts, so users load the exported parquet
folder instead (see README.md here)::

    from hf_negationclip.benchmarks.negrefcocog import NegRefCOCOgBuilder
    builder = NegRefCOCOgBuilder(config_name="scene", data_dir="runs/world")
    builder.download_and_prepare()
    ds = builder.as_dataset(split="test")
"""

from hf_negationclip.benchmarks.negrefcocog import CONFIGS, _builder_class, export_negrefcocog

NegRefCOCOgBuilder = _builder_class()

__all__ = ["CONFIGS", "NegRefCOCOgBuilder", "export_negrefcocog"]
