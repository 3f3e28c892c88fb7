"""The embedded scene world: a procedurally rendered stand-in for COCO, RefCOCOg and VQAv2.

Scenes hold 1 to 4 non-overlapping coloured shapes, centred in the cells of a 3x3
grid (``layout="grid"``, the default) or placed anywhere (``"random"``), on a muted
background: ``plain`` (flat or softly shaded, the default) or ``textured`` (shaded,
striped, grainy, checkered). :func:`write_world` renders a world and writes it in
the real file formats, so the loaders that read COCO, RefCOCOg and VQAv2 read it
unchanged::

    out/images/{split}/000000000001.jpg
    out/annotations/instances_{split}.json     COCO instances (+ color/size attributes)
    out/annotations/captions_{split}.json      COCO captions, 5 per image, never negated
    out/refcocog/refs(umd).p                   RefCOCOg refs (Python pickle, protocol 2)
    out/refcocog/instances.json                COCO instances of every split
    out/vqa/v2_OpenEnded_mscoco_{split}_questions.json
    out/vqa/v2_mscoco_{split}_annotations.json
    out/world.json                             the parameters that made it

The captions reproduce the bias that the NegationCLIP paper blames on web
captions: they describe what *is* in the image and never negate anything.
Negation appears only where it is needed, in referring expressions ("the circle
that is not red") and in "no"-answered VQA questions.

Everything is a function of ``seed``: the same call writes the same bytes.
"""

from .files import (
    image_file_name,
    write_world,
)
from .language import (
    CAPTION_DETAIL_WEIGHTS,
    article,
    describe,
    join_phrases,
    make_captions,
    make_questions,
    referring_expressions,
    tokenize_expression,
)
from .render import (
    BACKGROUND_FAMILIES,
    BACKGROUNDS,
    CAPTIONS_PER_IMAGE,
    COLOR_RGB,
    COLORS,
    DEFAULT_BACKGROUND,
    DEFAULT_IMAGE_SIZE,
    DEFAULT_LAYOUT,
    DEFAULT_SPLITS,
    GRID,
    LAYOUTS,
    SHAPES,
    SIZE_RADIUS,
    SIZES,
    WORLD_FORMAT_VERSION,
    background_style,
    free_spot,
    grid_cells,
    mask_to_rle,
    object_bbox,
    object_mask,
    object_segmentation,
    render_scene,
    sample_scene,
    shape_polygon,
)

__all__ = [
    "BACKGROUNDS",
    "BACKGROUND_FAMILIES",
    "CAPTIONS_PER_IMAGE",
    "CAPTION_DETAIL_WEIGHTS",
    "COLORS",
    "COLOR_RGB",
    "DEFAULT_BACKGROUND",
    "DEFAULT_IMAGE_SIZE",
    "DEFAULT_LAYOUT",
    "DEFAULT_SPLITS",
    "GRID",
    "LAYOUTS",
    "SHAPES",
    "SIZES",
    "SIZE_RADIUS",
    "WORLD_FORMAT_VERSION",
    "article",
    "background_style",
    "describe",
    "free_spot",
    "grid_cells",
    "image_file_name",
    "join_phrases",
    "make_captions",
    "make_questions",
    "mask_to_rle",
    "object_bbox",
    "object_mask",
    "object_segmentation",
    "referring_expressions",
    "render_scene",
    "sample_scene",
    "shape_polygon",
    "tokenize_expression",
    "write_world",
]
