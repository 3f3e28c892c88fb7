"""Local models through transformers: any causal LM writes, any image-text-to-text model (LLaVA-style) verifies.

Generation is batched (left padding) with the paper's sampling defaults
(temperature 0.6, top-p 0.9); the verifier decodes greedily and applies the
paper's rule (an answer containing "yes" drops the item). Under ``accelerate
launch`` each process takes its own slice of the shard (see ``run_corpus``).
Nothing is loaded with ``trust_remote_code``.
"""

from __future__ import annotations

import logging

from .prompts import SYSTEM, GenerativeTextBackend, GenerativeVerifier

logger = logging.getLogger(__name__)


def _device():
    from ...launch import launch_state

    return launch_state().device


def _chat_text(tokenizer_or_processor, content, system: str | None = None) -> str | None:
    """The model's own chat template applied to one user turn, or None when it has none."""
    if not getattr(tokenizer_or_processor, "chat_template", None):
        return None
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": content}]
    try:
        return tokenizer_or_processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    except Exception:  # templates that reject a system turn, etc.: fall back to the plain prompt
        return None


class TransformersTextBackend(GenerativeTextBackend):
    name = "transformers"

    def __init__(
        self,
        model_name_or_path: str,
        batch_size: int = 16,
        seed: int = 0,
        max_new_tokens: int = 48,
        temperature: float = 0.6,
        top_p: float = 0.9,
    ):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model_name_or_path)
        self.tokenizer.padding_side = "left"  # decoder-only batches pad on the left
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(model_name_or_path).to(_device()).eval()
        self.batch_size, self.seed = batch_size, seed
        self.gen = {
            "do_sample": True,
            "temperature": temperature,
            "top_p": top_p,
            "max_new_tokens": max_new_tokens,
            "pad_token_id": self.tokenizer.pad_token_id,
        }
        self._torch = torch

    def generate(self, prompts: list[str]) -> list:
        texts = [_chat_text(self.tokenizer, p, SYSTEM) or f"{SYSTEM}\n\n{p}\n\nAnswer:" for p in prompts]
        out: list = []
        self._torch.manual_seed(self.seed)
        for start in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(texts[start : start + self.batch_size], return_tensors="pt", padding=True).to(
                self.model.device
            )
            with self._torch.no_grad():
                ids = self.model.generate(**batch, **self.gen)
            out += self.tokenizer.batch_decode(ids[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)
        return out


class TransformersVerifier(GenerativeVerifier):
    name = "mllm"

    def __init__(self, model_name_or_path: str, batch_size: int = 8, max_new_tokens: int = 8):
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        self.processor = AutoProcessor.from_pretrained(model_name_or_path)
        tok = getattr(self.processor, "tokenizer", None)
        if tok is not None:
            tok.padding_side = "left"
            if tok.pad_token is None:
                tok.pad_token = tok.eos_token
        self.model = AutoModelForImageTextToText.from_pretrained(model_name_or_path).to(_device()).eval()
        self.batch_size, self.max_new_tokens, self._torch = batch_size, max_new_tokens, torch
        self.image_token = getattr(self.processor, "image_token", "<image>")

    def _prompt(self, question: str) -> str:
        templated = _chat_text(self.processor, [{"type": "image"}, {"type": "text", "text": question}])
        return templated or f"USER: {self.image_token}\n{question} ASSISTANT:"

    def ask(self, jobs, questions: list[str]) -> list:
        from PIL import Image

        out: list = []
        for start in range(0, len(jobs), self.batch_size):
            chunk, qs = jobs[start : start + self.batch_size], questions[start : start + self.batch_size]
            images, ok = [], []
            for job in chunk:
                try:
                    with Image.open(job.image_path) as im:
                        images.append(im.convert("RGB"))
                    ok.append(True)
                except OSError as err:
                    logger.warning("mllm verifier: cannot read %s (%s)", job.image_path, err)
                    ok.append(err)
            keep = [i for i, flag in enumerate(ok) if flag is True]
            answers = iter(self._generate([images[k] for k in range(len(keep))], [qs[i] for i in keep]) if keep else [])
            out += [next(answers) if flag is True else flag for flag in ok]
        return out

    def _generate(self, images, questions) -> list[str]:
        inputs = self.processor(
            images=images, text=[self._prompt(q) for q in questions], return_tensors="pt", padding=True
        ).to(self.model.device)
        with self._torch.no_grad():
            ids = self.model.generate(**inputs, do_sample=False, max_new_tokens=self.max_new_tokens)
        return self.processor.batch_decode(ids[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
