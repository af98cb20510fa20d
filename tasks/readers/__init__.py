"""Dataset readers: real file formats in, typed records (tasks/records.py) out.

Each reader module handles one source family and raises :class:`DataError` naming the file
and the record for anything malformed.  Readers never import the model.

``SOURCES`` maps a source name to a reader called as ``SOURCES[name](root, split, **options)``
(``root``: the source's file or folder; ``options``: the reader's keyword arguments, e.g.
``images=`` for the picture folder).  Where a module's own function takes explicit file paths
(VSR, VQA, GQA, COCO detection, the RefCOCO eval json), a small adapter here finds the official
file name of ``split`` in ``root`` (or uses ``root`` when it is the file itself):

Sources (record type, task, files under ``root``)::

    refcoco, refcoco+, refcocog   RegionRecord (refer, identify)  <dataset>/instances.json + <dataset>/refs(unc|umd).p
    refcoco_eval                  RegionRecord (refer)            <dataset>_<split>.json (MiniGPT-v2 eval json)
    vg_regions                    RegionRecord (refer)            region_descriptions.json + image_data.json
    coco_det                      DetectionRecord (detection)     instances_<split>.json (or the file)
    flickr_grounded_caption       GroundedCaptionRecord           groundedcaption.json
    flickr_caption_to_phrase      DetectionRecord (detection)     captiontobbox.json
    flickr_phrase_to_box          DetectionRecord (detection)     phrasetobbox.json
    vqav2, okvqa                  VQARecord (vqa)                 [v2_]OpenEnded_mscoco_<split>2014_questions.json
                                                                  + [v2_]mscoco_<split>2014_annotations.json
    aokvqa, vizwiz                VQARecord (vqa)                 aokvqa_v1p0_<split>.json / <split>.json
    gqa                           VQARecord (vqa)                 <split>_balanced_questions.json
    vsr                           VQARecord (vqa)                 <split>.jsonl (or zeroshot_<split>.jsonl)
    ocrvqa                        VQARecord (vqa)                 dataset.json + images/
    coco_caption, textcaps        CaptionRecord (caption)         Karpathy json / TextCaps_0.1_<split>.json
    pairs_folder, pairs_tar       CaptionRecord (caption)         picture + .txt files / webdataset .tar shards
    llava_conversation, llava_detail, llava_reason, multitask_conversation
                                  ConversationRecord (chat)       LLaVA-Instruct json files
    cc_sbu_align                  ConversationRecord (chat)       filter_cap.json + image/
    unnatural_instructions, alpaca, dolly
                                  ConversationRecord (chat)       JSON list / jsonl, no pictures
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

from tasks.readers.base import DataError
from tasks.readers.captions import read_coco_caption, read_textcaps
from tasks.readers.cc_sbu_align import read_cc_sbu_align
from tasks.readers.coco_det import read_coco_detection
from tasks.readers.flickr30k import (
    read_flickr_caption_to_phrase,
    read_flickr_grounded_caption,
    read_flickr_phrase_to_box,
)
from tasks.readers.gqa import read_gqa
from tasks.readers.llava import (
    read_llava_conversation,
    read_llava_detail,
    read_llava_reason,
    read_multitask_conversation,
)
from tasks.readers.ocrvqa import read_ocrvqa
from tasks.readers.pairs import read_pairs_folder, read_pairs_tar
from tasks.readers.refcoco import read_refcoco, read_refcoco_eval_json
from tasks.readers.text_only import read_alpaca, read_unnatural_instructions
from tasks.readers.visual_genome import read_vg_regions
from tasks.readers.vqa import read_vqa
from tasks.readers.vsr import read_vsr
from tasks.records import RegionRecord


def _in(root: str | Path, *names: str) -> Path:
    """``root`` itself when it is a file, else the first of ``names`` that exists in it (else the
    first name, so that the error names the expected file)."""
    root = Path(root)
    if not root.is_dir():
        return root
    for name in names:
        if (root / name).is_file():
            return root / name
    return root / names[0]


def _year(split: str) -> str:
    """``train`` -> ``train2014`` (COCO-based VQA files); ``test-dev2015`` stays."""
    return split if any(c.isdigit() for c in split) else f"{split}2014"


def _refer(dataset: str) -> Callable[..., list]:
    def read(root: str | Path, split: str = "val", **options) -> list:
        return read_refcoco(root, dataset=dataset, split=split, **options)

    read.__name__ = read.__qualname__ = f"read_{dataset.replace('+', '_plus')}"
    read.__doc__ = f"{dataset} (refer toolkit layout) via :func:`tasks.readers.refcoco.read_refcoco`."
    return read


def read_refcoco_eval(root: str | Path, split: str = "val", dataset: str = "refcoco", **options) -> list:
    """MiniGPT-v2 evaluation json ``<dataset>_<split>.json`` in ``root`` (or the file)."""
    return read_refcoco_eval_json(_in(root, f"{dataset}_{split}.json"), **options)


def read_coco_det(root: str | Path, split: str = "val", images: str | Path | None = None) -> list:
    """COCO-format detection file ``instances_<split>.json`` in ``root`` (or the file)."""
    return read_coco_detection(_in(root, f"instances_{split}.json", "instances.json"), images)


def read_coco_refer(root: str | Path, split: str = "val", images: str | Path | None = None) -> list:
    """A COCO-format detection file as referring data: one :class:`RegionRecord` per object
    whose category occurs exactly once in its image (so the category name refers to it
    unambiguously).  For fine-tuning refer / identify on your own COCO-format annotations."""
    out = []
    for det in read_coco_det(root, split, images):
        counts = Counter(phrase for phrase, _ in det.objects)
        for phrase, box in det.objects:
            if counts[phrase] == 1:
                out.append(RegionRecord(det.image, det.width, det.height, phrase, box,
                                        meta={**det.meta, "source": "coco_refer"}))
    return out


def read_vsr_split(root: str | Path, split: str = "test", **options) -> list:
    """VSR ``<split>.jsonl`` (or ``zeroshot_<split>.jsonl``) in ``root`` (or the file)."""
    return read_vsr(_in(root, f"{split}.jsonl", f"zeroshot_{split}.jsonl"), **options)


def read_vqav2(root: str | Path, split: str = "val", **options) -> list:
    """VQAv2 question + annotation pair of ``split`` in ``root``."""
    root = Path(root)
    return read_vqa(root / f"v2_OpenEnded_mscoco_{_year(split)}_questions.json",
                    root / f"v2_mscoco_{_year(split)}_annotations.json", **options)


def read_okvqa(root: str | Path, split: str = "val", **options) -> list:
    """OK-VQA question + annotation pair of ``split`` in ``root``."""
    root = Path(root)
    return read_vqa(root / f"OpenEnded_mscoco_{_year(split)}_questions.json",
                    root / f"mscoco_{_year(split)}_annotations.json", **options)


def read_aokvqa(root: str | Path, split: str = "val", **options) -> list:
    """A-OKVQA ``aokvqa_v1p0_<split>.json`` in ``root`` (or the file)."""
    return read_vqa(_in(root, f"aokvqa_v1p0_{split}.json"), **options)


def read_vizwiz(root: str | Path, split: str = "val", **options) -> list:
    """VizWiz ``<split>.json`` in ``root`` (or the file)."""
    return read_vqa(_in(root, f"{split}.json"), **options)


def read_gqa_split(root: str | Path, split: str = "testdev", **options) -> list:
    """GQA ``<split>_balanced_questions.json`` (or ``<split>_all_questions.json``) in ``root``."""
    return read_gqa(_in(root, f"{split}_balanced_questions.json", f"{split}_all_questions.json"), **options)


SOURCES: dict[str, Callable[..., list]] = {
    # referring expressions -> RegionRecord
    "refcoco": _refer("refcoco"),
    "refcoco+": _refer("refcoco+"),
    "refcocog": _refer("refcocog"),
    "refcoco_eval": read_refcoco_eval,
    "vg_regions": read_vg_regions,
    # detection / grounding
    "coco_det": read_coco_det,
    "coco_refer": read_coco_refer,
    "flickr_grounded_caption": read_flickr_grounded_caption,
    "flickr_caption_to_phrase": read_flickr_caption_to_phrase,
    "flickr_phrase_to_box": read_flickr_phrase_to_box,
    # question answering -> VQARecord
    "vqav2": read_vqav2,
    "okvqa": read_okvqa,
    "aokvqa": read_aokvqa,
    "vizwiz": read_vizwiz,
    "gqa": read_gqa_split,
    "vsr": read_vsr_split,
    "ocrvqa": read_ocrvqa,
    # captions -> CaptionRecord
    "coco_caption": read_coco_caption,
    "textcaps": read_textcaps,
    "pairs_folder": read_pairs_folder,
    "pairs_tar": read_pairs_tar,
    # chat -> ConversationRecord
    "llava_conversation": read_llava_conversation,
    "llava_detail": read_llava_detail,
    "llava_reason": read_llava_reason,
    "multitask_conversation": read_multitask_conversation,
    "cc_sbu_align": read_cc_sbu_align,
    "unnatural_instructions": read_unnatural_instructions,
    "alpaca": read_alpaca,
    "dolly": read_alpaca,
}


def read_source(name: str, root: str | Path, split: str = "train", **options) -> list:
    """``SOURCES[name](root, split, **options)``; an unknown name lists the known ones."""
    if name not in SOURCES:
        raise DataError(f"unknown data source {name!r}; known sources: {', '.join(sorted(SOURCES))}")
    return SOURCES[name](root, split, **options)


__all__ = ["SOURCES", "DataError", "read_source"]
