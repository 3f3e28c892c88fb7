"""Backends of the corpus pipelines: text generation (``rules``, ``transformers``, ``openai``) and verification
(``annotations``, ``clip``, ``mllm`` through the transformers or openai backend), chosen by flag and chainable."""

from __future__ import annotations

from .base import PIPELINES, ChainVerifier, Job, TextBackend, Verifier
from .rules import ATTRIBUTE_FORMS, OBJECT_FORMS, RulesBackend
from .verifiers import AnnotationVerifier, ClipVerifier

TEXT_BACKENDS = ("rules", "transformers", "openai")
VERIFIERS = ("annotations", "clip", "mllm", "none")


def make_text_backend(cfg) -> TextBackend:
    """The text backend named by ``cfg.backend`` (a :class:`~hf_negationclip.corpus.CorpusConfig`)."""
    if cfg.backend == "rules":
        return RulesBackend(bind_ratio=cfg.bind_ratio)
    if cfg.backend == "transformers":
        from .transformers_lm import TransformersTextBackend

        if not cfg.lm_model:
            raise ValueError("--backend transformers needs --lm_model (a local causal LM folder or Hub id)")
        return TransformersTextBackend(
            cfg.lm_model, batch_size=cfg.batch_size, seed=cfg.seed, max_new_tokens=cfg.max_new_tokens
        )
    if cfg.backend == "openai":
        from .openai_api import OpenAIClient, OpenAITextBackend

        return OpenAITextBackend(OpenAIClient.from_config(cfg))
    raise ValueError(f"--backend must be one of {TEXT_BACKENDS}, got {cfg.backend!r}")


def make_verifier(cfg, src, cache: dict | None = None) -> ChainVerifier:
    """The '+'-chained verifiers of ``cfg.verifiers`` for one split; models are loaded once through ``cache``."""
    cache = {} if cache is None else cache
    names = [n.strip() for n in cfg.verifiers.replace(",", "+").split("+") if n.strip() and n.strip() != "none"]
    chain = []
    for name in names:
        if name == "annotations":
            if not src.has_objects:
                raise ValueError(
                    f"the annotations verifier needs instances_{src.name}.json; use --verifiers clip or mllm"
                )
            chain.append(AnnotationVerifier())
        elif name == "clip":
            if not cfg.clip_model:
                raise ValueError("--verifiers clip needs --clip_model")
            if "clip" not in cache:
                cache["clip"] = ClipVerifier(cfg.clip_model, [], cfg.clip_threshold)
            cache["clip"].categories = list(src.vocabulary.categories) if src.vocabulary else []
            chain.append(cache["clip"])
        elif name == "mllm":
            chain.append(cache.setdefault("mllm", _make_mllm(cfg)))
        else:
            raise ValueError(f"unknown verifier {name!r}; expected '+'-joined names from {VERIFIERS}")
    return ChainVerifier(chain)


def _make_mllm(cfg) -> Verifier:
    if cfg.backend == "openai" and not cfg.mllm_model:
        from .openai_api import OpenAIClient, OpenAIVerifier

        return OpenAIVerifier(OpenAIClient.from_config(cfg))
    if not cfg.mllm_model:
        raise ValueError("--verifiers mllm needs --mllm_model (image-text-to-text model) or --backend openai")
    from .transformers_lm import TransformersVerifier

    return TransformersVerifier(cfg.mllm_model, batch_size=cfg.batch_size)


__all__ = [
    "ATTRIBUTE_FORMS",
    "AnnotationVerifier",
    "ChainVerifier",
    "ClipVerifier",
    "Job",
    "OBJECT_FORMS",
    "PIPELINES",
    "RulesBackend",
    "TEXT_BACKENDS",
    "TextBackend",
    "VERIFIERS",
    "Verifier",
    "make_text_backend",
    "make_verifier",
]
