"""Training data: images with their captions, negated-caption corpora and ``datasets`` sources.

Every source ends up as :class:`ImageTextData`: unique images, each with a
list of :class:`Caption` entries. A caption may carry what the extra loss
terms need: the affirmative caption it was made from (hard negative), wrong
options (MCQ term) and distractor images that contain the negated thing
(exclusion term). A distractor travels WITH its caption: whichever batch and
process a caption lands in, its distractors are encoded there too, so the
pairs are co-located by construction.
"""

from __future__ import annotations

import json
import logging
import os
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path

import torch
from PIL import Image
from tqdm.auto import tqdm

from ..corpus import has_negation, load_coco_captions, negation_clause, swapped_clause
from ..io import FormatError, read_json
from .batch import Batch, BatchSources, BatchSpec, Pick, TokenCache, collate

logger = logging.getLogger(__name__)


def _flip_of(options: Sequence[str]) -> str | None:
    """The first wrong option when it negates nothing; a first option that negates something is a scope swap
    written without its flip (a backend that could not build one), not a flip."""
    return options[0] if options and not has_negation(options[0]) else None


@dataclass(frozen=True)
class Caption:
    """A caption and what the optional loss terms need of it."""

    text: str
    original: str | None = None  # the affirmative caption a negated one was made from
    distractors: tuple[Path, ...] = ()  # images holding the negated thing (minimal pairs)
    mcq_wrong: tuple[str, ...] = ()  # wrong options of a multiple-choice question on the image
    #: the negation alone and its flip alone ("No blue star here", "A blue star here"), without the caption, and
    #: where the caption has a scope swap, the clause negating the object the image holds ("No red circle here")
    clause: tuple[str, ...] | None = None
    #: the caption's own image when its record trains on an added pair's rendered positive (the scene the caption
    #: was written of, without the added object): the square term's side "o" picks the caption over its flip there
    bare: Path | None = None

    @cached_property
    def flip(self) -> str | None:
        """The affirmative flip (the first wrong option), or None (see :func:`_flip_of`)."""
        return _flip_of(self.mcq_wrong)

    def clause_view(self) -> Caption:
        """This caption trained as its negation clause: the clause as text, its flip (and the clause negating a
        present object) as the wrong options."""
        return replace(self, text=self.clause[0], mcq_wrong=tuple(self.clause[1:]), clause=None)


@dataclass(frozen=True)
class DatasetImage:
    """An image inside a ``datasets`` table, decoded only when needed (hashable, so it groups like a path)."""

    table: object
    row: int
    column: str

    def __hash__(self) -> int:
        return hash((id(self.table), self.row, self.column))

    def __eq__(self, other) -> bool:
        return isinstance(other, DatasetImage) and (id(self.table), self.row, self.column) == (
            id(other.table),
            other.row,
            other.column,
        )

    def open(self) -> Image.Image:
        return self.table[self.row][self.column]


@dataclass(frozen=True)
class TrainRecord:
    """One (image, caption) pair; ``image`` is a path or a :class:`DatasetImage`."""

    image: Path | DatasetImage
    caption: Caption


def image_key(record):
    """The image a record refers to (``TrainRecord.image`` or ``CaptionRecord.image_path``)."""
    return getattr(record, "image", None) or record.image_path


def _sort_key(image) -> tuple:
    return (image.row, image.column) if isinstance(image, DatasetImage) else (0, str(image))


def open_image(source) -> Image.Image:
    try:
        if isinstance(source, DatasetImage):
            image = source.open()
        elif isinstance(source, Image.Image):
            image = source
        else:
            with Image.open(source) as im:
                return im.convert("RGB")
        return image.convert("RGB")
    except (OSError, ValueError) as err:
        raise OSError(f"cannot read training image {describe_image(source)}: {err}") from err


def describe_image(source) -> str:
    """A short name of an image source for messages and ``skipped_images.json``."""
    if isinstance(source, DatasetImage):
        return f"{source.column}[{source.row}] of the dataset"
    return str(source)


def _readable(source) -> bool:
    try:
        open_image(source)
    except OSError:
        return False
    return True


def drop_unreadable_images(records: Sequence, show_progress: bool = True) -> tuple[list, list[str]]:
    """``records`` without those whose image cannot be read, without unreadable distractors and bare images; + what
    was skipped.

    Every image and distractor is decoded once, up front (threads), so the data a run trains on, and hence its
    batches, stay a function of the seed: a resumed run skips the same images. Like webdataset's
    ``warn_and_continue``, for large image sets where a few files are corrupt.
    """
    from concurrent.futures import ThreadPoolExecutor

    sources = {image_key(r): None for r in records}
    for r in records:
        sources.update(dict.fromkeys(getattr(r.caption, "distractors", ())))
        if getattr(r.caption, "bare", None) is not None:
            sources[r.caption.bare] = None
    todo = list(sources)
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        readable = list(
            tqdm(pool.map(_readable, todo), total=len(todo), desc="checking images", disable=not show_progress)
        )
    bad = {s for s, ok in zip(todo, readable) if not ok}
    if not bad:
        return list(records), []
    kept = []
    for r in records:
        if image_key(r) in bad:
            continue
        distractors = getattr(r.caption, "distractors", ())
        if any(d in bad for d in distractors):
            r = replace(r, caption=replace(r.caption, distractors=tuple(d for d in distractors if d not in bad)))
        if getattr(r.caption, "bare", None) in bad:
            r = replace(r, caption=replace(r.caption, bare=None))
        kept.append(r)
    skipped = sorted(describe_image(s) for s in bad)
    logger.warning("skipped %d unreadable images (of %d): %s", len(skipped), len(todo), ", ".join(skipped[:5]))
    return kept, skipped


def skip_unreadable(records: Sequence, out_dir: Path, show_progress: bool = True) -> list:
    """``--skip_bad_images``: drop unreadable images and list them in ``<out_dir>/skipped_images.json``."""
    kept, skipped = drop_unreadable_images(records, show_progress)
    (Path(out_dir) / "skipped_images.json").write_text(json.dumps({"count": len(skipped), "images": skipped}, indent=2))
    if not kept:
        raise ValueError(f"none of the {len(records)} training records has a readable image")
    return kept


class ImageTextData:
    """Unique images, each with all its captions; one caption is drawn per image per epoch.

    Drawing per image (not per caption) keeps an image from meeting itself as
    a negative in the same batch. With ``affirmative_ratio`` > 0, that
    fraction of the negated picks of an epoch uses the caption's original
    affirmative caption instead (keeps generality); with ``clause_ratio`` > 0,
    that fraction of the other negated picks trains as its negation clause
    alone (:meth:`Caption.clause_view`, same image and distractors). With an ``encoder``
    (pixels -> image embeddings, e.g. a frozen vision tower) every image and
    distractor is encoded ONCE here and batches carry its features (``image_kind``)
    instead of pixels: a text-side fine-tune then never runs the vision tower
    again, and the cache holds a few hundred bytes per image, not its pixels.
    """

    def __init__(
        self,
        records: Sequence,
        processor,
        cache_images: bool = True,
        show_progress: bool = True,
        affirmative_ratio: float = 0.0,
        encoder: Callable[[torch.Tensor], torch.Tensor] | None = None,
        feature_store: dict | None = None,
        clause_ratio: float = 0.0,
        image_kind: str = "image_embeds",
    ):
        captions: dict[object, list[Caption]] = defaultdict(list)
        for r in records:  # CaptionRecord (image_path, caption str) or TrainRecord
            captions[image_key(r)].append(r.caption if isinstance(r.caption, Caption) else Caption(r.caption))
        self.paths = sorted(captions, key=_sort_key)
        self.captions = [captions[p] for p in self.paths]
        self.processor, self.affirmative_ratio, self.clause_ratio = processor, affirmative_ratio, clause_ratio
        self.tokens = TokenCache(processor.tokenizer)  # each text tokenised once per run, not once per batch
        self.spec = BatchSpec()  # what a batch carries beyond captions: set from the loss terms (losses.batch_spec)
        self.cache = self.distractor_cache = self.anchors = self.image_anchors = self.distractor_anchors = None
        #: the model's keyword for what batches carry: an ``encoder``'s features (``image_kind``) or pixels
        self.image_kind = image_kind if encoder is not None else "pixel_values"
        self._token_counts: dict[str, int] | None = None  # text -> token count, for group_by_length
        self._order_key = self._order = None  # the last grouped order (a function of epoch, seed, group size)
        self.encoder, self.feature_store = encoder, feature_store
        if cache_images or encoder is not None:
            self.cache = self._process_all(self.paths, "preprocessing images", show_progress)
            extra = {d for cs in self.captions for c in cs for d in c.distractors}
            extra = sorted(extra | {c.bare for cs in self.captions for c in cs if c.bare is not None}, key=str)
            if extra:
                self.distractor_row = {d: i for i, d in enumerate(extra)}
                self.distractor_cache = self._process_all(extra, "preprocessing distractors", show_progress)

    def __len__(self) -> int:
        return len(self.paths)

    def available(self) -> frozenset[str]:
        """What this data holds for the optional loss terms: originals, distractors, MCQ options, anchors."""
        captions = [c for cs in self.captions for c in cs]
        held = {
            "originals": any(c.original for c in captions),
            "distractors": any(c.distractors for c in captions),
            "mcq": any(c.mcq_wrong for c in captions),
            "anchors": self.anchors is not None,
            "image_anchors": self.image_anchors is not None,
        }
        return frozenset(name for name, present in held.items() if present)

    def set_anchors(
        self,
        encode_texts: Callable[[list[str]], torch.Tensor],
        batch_size: int = 256,
        flips: bool = False,
        store: dict | None = None,
    ) -> None:
        """Fix the starting model's embedding of every affirmative text (a caption's original, else the caption,
        with ``flips`` also each negated caption's affirmative flip, ``Caption.flip``).

        The ``retain`` loss term keeps the trained model's embeddings of these
        texts close to these anchors, so learning negation does not cost the
        model what it knew about plain captions (zero-shot, retrieval). A
        ``store`` (text -> anchor of this starting model, shared by runs from
        it) is filled with the texts it lacks and read for the rest.
        """
        texts = {c.original or c.text for cs in self.captions for c in cs}
        if flips:  # the flips are affirmative texts too (the retain term holds them with ``retain_flips``)
            texts |= {c.flip for cs in self.captions for c in cs if c.flip}
            if self.clause_ratio:
                texts |= {c.clause[1] for cs in self.captions for c in cs if c.clause}
        texts = sorted(texts)
        store = {} if store is None else store  # text -> anchor of THIS starting model: only new texts are encoded
        todo = [t for t in texts if t not in store]
        for i in range(0, len(todo), batch_size):
            store.update(zip(todo[i : i + batch_size], encode_texts(todo[i : i + batch_size])))
        self.anchor_row = {t: i for i, t in enumerate(texts)}
        self.anchors = torch.stack([store[t] for t in texts])

    def set_image_anchors(self, encode: Callable[[torch.Tensor], torch.Tensor], batch_size: int = 1024) -> None:
        """Fix the starting model's embedding of every image (``encode``: cached images -> embeddings), the
        distractors and the captions' own images (``Caption.bare``) included.

        The ``image_retain`` term keeps each image a step encodes near it while the vision side trains.
        """
        if self.cache is None:
            raise ValueError("the image-retain term needs the images cached: leave cache_images on")

        def encode_all(cache: torch.Tensor) -> torch.Tensor:
            return torch.cat([encode(cache[i : i + batch_size]) for i in range(0, len(cache), batch_size)])

        self.image_anchors = encode_all(self.cache)
        if self.distractor_cache is not None:
            self.distractor_anchors = encode_all(self.distractor_cache)

    def _process(self, sources: Sequence) -> torch.Tensor:
        return self.processor(images=[open_image(s) for s in sources], return_tensors="pt")["pixel_values"]

    def _process_all(self, sources: Sequence, desc: str, show_progress: bool) -> torch.Tensor:
        if self.encoder is None:
            return torch.cat(
                [
                    self._process(sources[i : i + 256])
                    for i in tqdm(range(0, len(sources), 256), desc=desc, disable=not show_progress)
                ]
            )
        # encoded features; with a feature_store (file path -> features of THIS encoder) only new files are encoded
        keyed = self.feature_store is not None and all(isinstance(s, (str, Path)) for s in sources)
        store = self.feature_store if keyed else {}
        key = (lambda s: str(s)) if keyed else id
        todo = list({key(s): s for s in sources if key(s) not in store}.values())
        for i in tqdm(
            range(0, len(todo), 256),
            desc=desc.replace("preprocessing", "encoding"),
            disable=not show_progress or not todo,
        ):
            chunk = todo[i : i + 256]
            store.update(zip(map(key, chunk), self.encoder(self._process(chunk))))
        return torch.stack([store[key(s)] for s in sources]) if len(sources) else torch.zeros(0)

    def order(self, epoch: int, seed: int, group_size: int = 0) -> torch.Tensor:
        """The image order of an epoch: a function of (seed, epoch), so a resumed run sees the same batches.

        ``group_size`` > 1 groups by length (as ``transformers``' ``group_by_length``): each run of 50 batches
        of the random order is sorted by the token count of the text its images use this epoch and cut into
        batches of ``group_size``, then the batches are shuffled. A batch pads to its longest text, so
        similar lengths waste far less compute on padding; batches stay random otherwise.

        Not ``transformers.trainer_pt_utils.get_length_grouped_indices``: from the same permutation it gives
        another order (its megabatch defaults to min(n // (4 * batch), 50) batches, and it keeps each
        megabatch's batches long-to-short with the longest batch first instead of shuffling the batches), so
        adopting it would change every grouped run's batches; the shuffle also keeps length trends out of the
        cosine schedule.
        """
        gen = torch.Generator().manual_seed(seed * 100_003 + epoch)
        perm = torch.randperm(len(self), generator=gen)
        if group_size <= 1 or len(self) < 2 * group_size:
            return perm
        key = (epoch, seed, group_size)
        if self._order_key != key:
            lengths = self.text_lengths(epoch, seed)
            mega = 50 * group_size
            perm = torch.cat(
                [part[torch.argsort(lengths[part], descending=True, stable=True)] for part in perm.split(mega)]
            )
            full = len(perm) // group_size * group_size
            batches = perm[:full].view(-1, group_size)[torch.randperm(full // group_size, generator=gen)]
            self._order_key, self._order = key, torch.cat([batches.flatten(), perm[full:]])
        return self._order

    def text_lengths(self, epoch: int, seed: int) -> torch.Tensor:
        """Token count of the text each image uses in an epoch (its caption, or the affirmative original)."""
        if self._token_counts is None:
            texts = {t for cs in self.captions for c in cs for t in (c.text, c.original) if t}
            texts = sorted(texts | {c.clause[0] for cs in self.captions for c in cs if c.clause})
            self._token_counts = {t: len(i) for t, i in zip(texts, self.tokens.token_ids(texts))}
        counts = self._token_counts
        return torch.tensor([counts[pick.text] for pick in self.entries(range(len(self)), epoch, seed)])

    def _caption_picks(self, epoch: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Which caption of each image an epoch uses, whether it swaps to the affirmative original, whether to
        its negation clause (drawn after the others: a ``clause_ratio`` leaves the other draws as they were)."""
        if getattr(self, "_picks_key", None) != (epoch, seed):
            gen = torch.Generator().manual_seed(seed * 7_919 + epoch)
            picks = torch.randint(0, 1 << 30, (len(self),), generator=gen)
            swap = torch.rand(len(self), generator=gen) < self.affirmative_ratio
            clause = torch.rand(len(self), generator=gen) < self.clause_ratio
            self._picks_key, self._picks = (epoch, seed), (picks, swap, clause)
        return self._picks

    def entries(self, indices: Sequence[int], epoch: int, seed: int) -> list[Pick]:
        """The caption each image index uses in an epoch, and whether it swaps to its affirmative original."""
        picks, swap, clause = self._caption_picks(epoch, seed)
        out = []
        for i in indices:
            entry = self.captions[i][int(picks[i]) % len(self.captions[i])]
            swapped = bool(swap[i]) and entry.original is not None
            if not swapped and bool(clause[i]) and entry.clause is not None:
                entry = entry.clause_view()
            out.append(Pick(entry, swapped))
        return out

    def _distractor_pixels(self, paths: Sequence[Path]) -> torch.Tensor:
        if self.distractor_cache is not None:
            return self.distractor_cache[[self.distractor_row[p] for p in paths]]
        return self._process(paths)

    def batch(self, indices: Sequence[int], epoch: int, seed: int) -> Batch:
        """One :class:`Batch`: the images (pixels or cached embeddings) and the rows and fields of ``self.spec``."""
        pixels = (
            self.cache[list(indices)] if self.cache is not None else self._process([self.paths[i] for i in indices])
        )
        sources = BatchSources(
            anchors=(lambda texts: self.anchors[[self.anchor_row[t] for t in texts]])
            if self.anchors is not None
            else None,
            distractors=self._distractor_pixels,
            image_anchors=self.image_anchors[list(indices)] if self.image_anchors is not None else None,
            distractor_anchors=(lambda paths: self.distractor_anchors[[self.distractor_row[p] for p in paths]])
            if self.distractor_anchors is not None
            else None,
        )
        picks = self.entries(indices, epoch, seed)
        return collate(picks, pixels, self.image_kind, self.tokens, self.spec, sources)


# --------------------------------------------------------------------------- sources


def negated_captions_path(corpus_dir: str | os.PathLike, split: str) -> Path:
    """``<corpus_dir>/negated_captions_<split>.json``: the corpus interchange file."""
    return Path(corpus_dir) / f"negated_captions_{split}.json"


def _mcq_wrong(ann: dict) -> tuple[str, ...]:
    """Wrong MCQ options: given ones (``mcq_wrong``), else the original caption affirming the negated thing."""
    given = ann.get("mcq_wrong")
    if isinstance(given, list):
        return tuple(str(t) for t in given if isinstance(t, str) and t.strip())
    negated, original = ann.get("negated"), ann.get("caption")
    if isinstance(negated, str) and negated.strip() and isinstance(original, str) and original.strip():
        return (f"{original.strip().rstrip('.')} with {negated.strip()}",)
    return ()


def load_negated_corpus(path: str | os.PathLike, image_dir: str | os.PathLike) -> list[TrainRecord]:
    """Read a ``negated_captions_<split>.json`` into records: the negated caption, its original and distractors.

    Distractor paths are relative to the JSON file's folder; a missing
    distractor file is skipped, counted and logged.
    """
    path = Path(path)
    base = load_coco_captions(path, image_dir, caption_field="updated_caption")
    anns = {a.get("id"): a for a in read_json(path)["annotations"] if isinstance(a, dict)}
    records, missing, clauses, swaps = [], 0, 0, 0
    for rec in base:
        ann = anns.get(rec.annotation_id, {})
        distractors = []
        for rel in ann.get("distractors") or []:
            if not isinstance(rel, str):
                raise FormatError(f"{path}: annotation {rec.annotation_id} has a non-string distractor {rel!r}")
            if (path.parent / rel).is_file():
                distractors.append(path.parent / rel)
            else:
                missing += 1
        original = ann.get("caption") if isinstance(ann.get("caption"), str) and ann["caption"].strip() else None
        image, bare = rec.image_path, None
        if isinstance(ann.get("image"), str):  # an added pair's rendered positive (relative to the JSON's folder)
            image, bare = path.parent / ann["image"], rec.image_path
        wrong = _mcq_wrong(ann)
        given_flip = _flip_of(wrong) if original and "mcq_wrong" in ann else None  # not the fallback option
        clause = negation_clause(rec.caption, original, given_flip) if given_flip else None
        swapped = swapped_clause(rec.caption, original, clause[0], wrong[1]) if clause and len(wrong) > 1 else None
        if swapped:  # the file's options are (flip, scope swap)
            clause, swaps = (*clause, swapped), swaps + 1
        clauses += clause is not None
        records.append(
            TrainRecord(
                image, Caption(rec.caption, original and original.strip(), tuple(distractors), wrong, clause, bare)
            )
        )
    if missing:
        logger.warning("%s: %d distractor images are missing and were skipped", path, missing)
    logger.info("%s: %d negation clauses, %d with the clause of their scope swap", path, clauses, swaps)
    return records


def load_image_text_dataset(
    source: str | os.PathLike, image_column: str = "image", text_column: str = "text", split: str = "train"
) -> list[TrainRecord]:
    """Records from a ``datasets`` dataset: a ``save_to_disk`` folder, a parquet folder/file, or a loadable name.

    ``text_column`` may hold a string or a list of strings per row.
    """
    import datasets

    source = str(source)
    if Path(source, "dataset_info.json").is_file() or Path(source, "dataset_dict.json").is_file():
        table = datasets.load_from_disk(source)
    elif source.endswith(".parquet"):
        table = datasets.load_dataset("parquet", data_files=source)
    else:
        table = datasets.load_dataset(source)
    if isinstance(table, datasets.DatasetDict):
        if split not in table:
            raise ValueError(f"{source} has no split {split!r}; it has {sorted(table)}")
        table = table[split]
    for column in (image_column, text_column):
        if column not in table.column_names:
            raise ValueError(f"{source} has no column {column!r}; its columns are {table.column_names}")
    records = []
    for row, value in enumerate(table[text_column]):
        for text in [value] if isinstance(value, str) else list(value or []):
            if isinstance(text, str) and text.strip():
                records.append(TrainRecord(DatasetImage(table, row, image_column), Caption(text.strip())))
    if not records:
        raise ValueError(f"{source} column {text_column!r} holds no text")
    return records


def split_by_image(records: Sequence, val_fraction: float, seed: int) -> tuple[list, list]:
    """Hold out ``val_fraction`` of the IMAGES (all their captions) for validation, seeded."""
    keys = sorted({image_key(r) for r in records}, key=_sort_key)
    n_val = int(round(val_fraction * len(keys)))
    perm = torch.randperm(len(keys), generator=torch.Generator().manual_seed(seed)).tolist()
    val_keys = {keys[i] for i in perm[:n_val]}
    train = [r for r in records if image_key(r) not in val_keys]
    return train, [r for r in records if image_key(r) in val_keys]
