"""The benchmarks of ``mgv2 eval``, one declarative entry each: reader, task, prompt, metric.

A :class:`Benchmark` says where its records come from (``read(source, split)``), which task turns
a record into the SPEC §7 prompt (``kind`` + ``prompt_style``) and which metric scores it.  The
engine (:mod:`eval.engine`) and the scorers (:mod:`eval.scoring`, :mod:`eval.detection`) are
shared by all of them.

Data locations (``--data``; a folder is looked up by the file names below):

=============  ===================================================================================
refcoco/+/g    refer layout ``DIR/<dataset>/instances.json`` + ``refs(unc|umd).p``, or MiniGPT-v2
               eval json ``DIR/<dataset>_<split>.json`` (default ``../shared/data/refcoco_eval``)
vsr            ``zeroshot_<split>.jsonl`` (default ``../shared/data/vsr``)
okvqa          ``OpenEnded_mscoco_val2014_questions.json`` + ``mscoco_val2014_annotations.json``
vqav2          ``v2_OpenEnded_mscoco_val2014_questions.json`` + ``v2_mscoco_val2014_annotations.json``
gqa            ``testdev_balanced_questions.json`` (balanced questions only)
vizwiz         ``val.json``
aokvqa         ``aokvqa_v1p0_val.json`` (direct answers)
identify       the RefCOCO data (either layout, as refcoco); one item per OBJECT (image + box)
grounding      Flickr30k grounded captions ``groundedcaption_<split>.json`` (MiniGPT-v2's format)
               with ``--images`` = the pictures' folder (their sizes are read at load time)
detection      COCO instances json (``instances_<split>2017.json`` or ``instances_<split>.json``)
=============  ===================================================================================

Benchmarks beyond SPEC §7 (which names no identify or grounded-caption benchmark):

* ``identify``: prompt = the FIRST official identify template, ``[identify] {box}``, with the
  identify task's box text (the task's own inference prompt, ``[identify] what is this {box}``,
  is the demo's and is not a training template).  The expressions of one object (same image,
  same box) are merged into one record in order of first occurrence; an answer is correct when
  its VQA-normalised text equals that of ANY of them (:func:`eval.scoring.score_identify`).
* ``grounding``: prompt = the grounding task's (``[grounding] please describe this image in
  details``); phrase recall over all ground-truth phrases, text-only recall, phrase precision,
  parse failures (:func:`eval.scoring.score_grounding`).  Grounded captions are long: greedy
  decoding gets ``max_new_tokens`` 500 here (``--max-new-tokens`` overrides; 20 elsewhere).
* ``detection``: prompt = ``[detection] {the image's category names}``; the answer lists every
  box of every category, so it gets ``max_new_tokens`` 500 too.  At SPEC §7's 20 the answers were
  cut after two or three boxes on the tiny tokenizer (a box is six tokens there, about eighteen on
  Llama-2's, where 20 do not hold the phrase and its first box), and AP fell with the recall: the demo model's AP50 on the
  synthetic val 0.103 at 20, 0.150 at 500 (twenty-fifth session).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from mgv2.errors import MGV2Error
from tasks import identify
from tasks.detection import DetectionTask
from tasks.grounding import GroundingTask
from tasks.readers.base import DataError
from tasks.records import RegionRecord
from tasks.refer import ReferTask
from tasks.vqa import VQATask

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@dataclass(frozen=True)
class Source:
    """Where the data is: ``data`` (file or folder), an optional second ``annotations`` file,
    and the ``images`` folder (joined to the file names the readers give)."""

    data: Path | None = None
    annotations: Path | None = None
    images: Path | None = None


@dataclass(frozen=True)
class Benchmark:
    name: str
    kind: str  # "refer" | "identify" | "grounding" | "vqa" | "detection": the task that writes the prompt
    splits: tuple[str, ...]
    read: Callable[[Source, str], list]
    metric: str  # "refer" | "identify_exact" | "phrase_recall" | "vqa_acc" | "exact" | "coco_map"
    prompt_style: str = "short"  # VQA prompt of SPEC §7
    default_data: Path | None = None
    description: str = ""
    max_new_tokens: int = 20  # greedy decoding length (SPEC §7); ``--max-new-tokens`` overrides
    # splits a user may name but that "all" leaves out (refer: ``train``, to measure the fit on the
    # training expressions beside the held-out ones; only the refer layout has it)
    extra_splits: tuple[str, ...] = ()

    @property
    def default_split(self) -> str:
        return self.splits[0]

    def resolve_splits(self, split: str | None) -> list[str]:
        if split in (None, ""):
            return [self.default_split]
        if split == "all":
            return list(self.splits)
        if split not in self.splits + self.extra_splits:
            named = ", ".join(self.splits + self.extra_splits)
            raise MGV2Error(f"{self.name} has splits {named} (all = {', '.join(self.splits)}), not {split!r}")
        return [split]

    def prompt(self, record) -> str:
        if self.kind == "refer":
            return ReferTask().prompt(record)
        if self.kind == "identify":  # SPEC names no identify benchmark prompt: the first official template
            return identify.TEMPLATES[0].format(identify.IdentifyTask._box(record))
        if self.kind == "grounding":
            return GroundingTask().prompt(record)
        if self.kind == "vqa":
            return VQATask().prompt(record, style=self.prompt_style)
        if self.kind == "detection":
            return DetectionTask().prompt(record)
        raise ValueError(f"unknown benchmark kind {self.kind!r}")

    def load(self, source: Source, split: str) -> list:
        if source.data is None and self.default_data is not None:
            source = Source(self.default_data, source.annotations, source.images)
        if source.data is None:
            raise DataError(f"{self.name}: no data given; pass --data (see `mgv2 eval --help`)")
        return self.read(source, split)


# --------------------------------------------------------------------------- readers per layout


def _in_folder(path: Path, name: str | Sequence[str], what: str) -> Path:
    """``path`` itself when it is a file, else the first of ``path / name`` (one name or several,
    tried in order) that exists; a clear error when none does."""
    if path.is_file():
        return path
    names = [name] if isinstance(name, str) else list(name)
    for candidate in (path / n for n in names):
        if candidate.is_file():
            return candidate
    listed = " nor ".join(str(path / n) for n in names)
    raise DataError(f"{what}: {listed} not found (pass the file itself with --data)")


def _refer(dataset: str) -> Callable[[Source, str], list]:
    def read(src: Source, split: str) -> list:
        from tasks.readers.refcoco import SPLIT_BY, read_refcoco, read_refcoco_eval_json

        data = Path(src.data)
        if data.is_file():
            return read_refcoco_eval_json(data, images=src.images)
        if (data / dataset / "instances.json").is_file():
            return read_refcoco(data, dataset, split, SPLIT_BY[dataset], images=src.images)
        if (data / f"{dataset}_{split}.json").is_file():
            return read_refcoco_eval_json(data / f"{dataset}_{split}.json", images=src.images)
        if split == "train":
            raise DataError(
                f"{dataset} split train: {data / dataset / 'instances.json'} not found; the train split needs "
                f"the refer layout (the folder that holds {dataset}/instances.json and refs(unc).p, e.g. "
                "runs/demo_synth), not the evaluation jsons"
            )
        raise DataError(
            f"{dataset}: found neither {data / dataset / 'instances.json'} (refer layout) nor "
            f"{data / f'{dataset}_{split}.json'} (MiniGPT-v2 eval json)"
        )

    return read


def objects_of(records: Sequence[RegionRecord]) -> list[RegionRecord]:
    """One record per object (same image, same box) in order of first occurrence, holding every
    distinct expression of the object (``sentences``: the first one, then the others in order).
    ``meta`` is the first expression's, plus ``indices`` (positions in ``records``)."""
    merged: dict[tuple, tuple[RegionRecord, list[str], list[int]]] = {}
    for k, rec in enumerate(records):
        key = (str(rec.image), tuple(rec.box_xyxy))
        _, sentences, indices = merged.setdefault(key, (rec, [], []))
        for sentence in rec.sentences:
            if sentence not in sentences:
                sentences.append(sentence)
        indices.append(k)
    return [
        RegionRecord(image=rec.image, width=rec.width, height=rec.height, expression=sentences[0],
                     box_xyxy=rec.box_xyxy, alternatives=tuple(sentences[1:]),
                     meta={**rec.meta, "index": n, "indices": indices})
        for n, (rec, sentences, indices) in enumerate(merged.values())
    ]


def _identify(dataset: str) -> Callable[[Source, str], list]:
    read_expressions = _refer(dataset)

    def read(src: Source, split: str) -> list:
        return objects_of(read_expressions(src, split))

    return read


def _grounded_captions(src: Source, split: str) -> list:
    from tasks.readers.flickr30k import read_flickr_grounded_caption

    data = Path(src.data)
    if data.is_dir():
        data = _in_folder(data, f"groundedcaption_{split}.json", "Flickr30k grounded captions")
    return read_flickr_grounded_caption(data, split, images=src.images)


def _vsr(src: Source, split: str) -> list:
    from tasks.readers.vsr import read_vsr

    return read_vsr(_in_folder(Path(src.data), f"zeroshot_{split}.jsonl", "VSR"), images=src.images)


def _vqa_pair(questions: str, annotations: str) -> Callable[[Source, str], list]:
    def read(src: Source, split: str) -> list:
        from tasks.readers.vqa import read_vqa

        data = Path(src.data)
        q = _in_folder(data, questions.format(split=split), "VQA questions")
        if src.annotations is not None:
            a = Path(src.annotations)
        elif data.is_dir():
            a = _in_folder(data, annotations.format(split=split), "VQA annotations")
        else:
            raise DataError(f"{q} is a questions file: pass its annotations with --annotations")
        return read_vqa(q, a, images=src.images)

    return read


def _vqa_single(name: str) -> Callable[[Source, str], list]:
    def read(src: Source, split: str) -> list:
        from tasks.readers.vqa import read_vqa

        return read_vqa(_in_folder(Path(src.data), name.format(split=split), "VQA file"), images=src.images)

    return read


def _gqa(src: Source, split: str) -> list:
    from tasks.readers.gqa import read_gqa

    path = _in_folder(Path(src.data), f"{split}_balanced_questions.json", "GQA")
    return read_gqa(path, images=src.images, balanced_only=True)


def detection_gt_path(src: Source, split: str) -> Path:
    """The COCO instances file: ``--data`` itself, or ``instances_<split>2017.json`` (COCO) or
    ``instances_<split>.json`` (the synthetic world's ``coco_det/``) in the ``--data`` folder."""
    return _in_folder(Path(src.data), (f"instances_{split}2017.json", f"instances_{split}.json"), "COCO detection")


def _detection(src: Source, split: str) -> list:
    from tasks.readers.coco_det import read_coco_detection

    return read_coco_detection(detection_gt_path(src, split), images_dir=src.images)


BENCHMARKS: dict[str, Benchmark] = {
    b.name: b
    for b in [
        *(
            Benchmark(
                name, "refer", splits, _refer(name), "refer", default_data=SHARED_DATA / "refcoco_eval",
                description=f"{name} Acc@0.5 per expression ([refer] give me the location of {{sent}})",
                extra_splits=("train",),
            )
            for name, splits in (
                ("refcoco", ("val", "testA", "testB")),
                ("refcoco+", ("val", "testA", "testB")),
                ("refcocog", ("val", "test")),
            )
        ),
        Benchmark("vsr", "vqa", ("test", "dev"), _vsr, "exact", prompt_style="vsr",
                  default_data=SHARED_DATA / "vsr", description="VSR zero-shot accuracy (true/false)"),
        Benchmark("okvqa", "vqa", ("val",),
                  _vqa_pair("OpenEnded_mscoco_{split}2014_questions.json", "mscoco_{split}2014_annotations.json"),
                  "vqa_acc", description="OK-VQA, VQA accuracy"),
        Benchmark("vqav2", "vqa", ("val",),
                  _vqa_pair("v2_OpenEnded_mscoco_{split}2014_questions.json", "v2_mscoco_{split}2014_annotations.json"),
                  "vqa_acc", description="VQAv2, VQA accuracy"),
        Benchmark("gqa", "vqa", ("testdev",), _gqa, "exact",
                  description="GQA balanced questions, exact match after VQA answer normalisation"),
        Benchmark("vizwiz", "vqa", ("val",), _vqa_single("{split}.json"), "vqa_acc", prompt_style="vizwiz",
                  description="VizWiz, VQA accuracy"),
        Benchmark("aokvqa", "vqa", ("val",), _vqa_single("aokvqa_v1p0_{split}.json"), "vqa_acc",
                  description="A-OKVQA direct answers, VQA accuracy"),
        Benchmark("identify", "identify", ("val", "testA", "testB"), _identify("refcoco"), "identify_exact",
                  default_data=SHARED_DATA / "refcoco_eval",
                  description="RefCOCO objects, [identify] {box}: exact match (VQA normalisation) against any "
                              "expression of the object, one item per object; mean best-reference token F1"),
        Benchmark("grounding", "grounding", ("val",), _grounded_captions, "phrase_recall", max_new_tokens=500,
                  description="Flickr30k-style grounded captions ([grounding] please describe this image in "
                              "details): phrase recall (same phrase text and a box at IoU 0.5), text-only "
                              "recall, phrase precision, parse failures"),
        Benchmark("detection", "detection", ("val",), _detection, "coco_map", max_new_tokens=500,
                  description="COCO-format detection, bbox mAP by pycocotools (supervision cross-check)"),
    ]
}


def get_benchmark(name: str) -> Benchmark:
    if name not in BENCHMARKS:
        raise MGV2Error(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}")
    return BENCHMARKS[name]


def score(bench: Benchmark, records: Sequence, answers: Sequence[str | None], *, plus_one: bool = False,
          vqa_variant: str = "official", source: Source | None = None, split: str | None = None):
    """``(metrics, rows)`` of one split with the benchmark's metric."""
    from eval import scoring

    if bench.metric == "refer":
        return scoring.score_refer(records, answers, plus_one=plus_one)
    if bench.metric == "identify_exact":
        return scoring.score_identify(records, answers)
    if bench.metric == "phrase_recall":
        return scoring.score_grounding(records, answers, plus_one=plus_one)
    if bench.metric in ("vqa_acc", "exact"):
        return scoring.score_vqa(records, answers, bench.metric, variant=vqa_variant)
    if bench.metric == "coco_map":
        from eval.detection import score_detection
        from tasks.readers.coco_det import load_coco

        if source is None or split is None:
            raise ValueError("detection scoring needs the source and split (for the ground-truth file)")
        return score_detection(records, answers, load_coco(detection_gt_path(source, split)))
    raise ValueError(f"unknown metric {bench.metric!r}")
