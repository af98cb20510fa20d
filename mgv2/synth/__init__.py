"""The synthetic world: everyday objects in pictures, written in the REAL dataset formats.

``mgv2 synth --out DIR [--seed S] [--images N]`` draws ``N`` scenes of balloons, balls, boxes,
cups, stars, kites and hearts in eight colours, several sizes and random positions, with
occlusion and textured backgrounds, and writes them as the real datasets are written, so that
the real readers (``tasks.readers``) are what reads them.  Same seed and count -> same bytes.

Scene model (:mod:`mgv2.synth.world`): every object outline is a shapely polygon; what is
visible (outline minus everything in front), its box, and the spatial relations (left of,
right of, above, below, in front of, behind) are computed exactly from the geometry.  Pictures
are drawn with OpenCV (:mod:`mgv2.synth.render`); text comes from :mod:`mgv2.synth.language`;
:mod:`mgv2.synth.export` writes the files.

Splits are BY IMAGE (no image in two splits).  About 10% of the images each are val, testA
(balloon scenes; only balloons are referred to, like RefCOCO testA's people) and testB (scenes
about another kind; only non-balloons are referred to, like RefCOCO testB's objects); the rest
is train.  The other formats use the train images for their training split and the
val/testA/testB images for their held-out split.

Output folder layout (``DIR/``)::

    images/COCO_train2014_<id:012d>.jpg   the pictures, 256x256, 320x240, 240x320, 288x224 or 320x256;
                                          named like COCO train2014 (27-character stems), which the
                                          RefCOCO eval json, VQAv2 and MiniGPT-v2's LLaVA loaders expect
    scenes.jsonl                          ground truth, one line per image: size, split, background and
                                          every object (kind, colour, shape parameters, ann_id,
                                          visible_box and polygon box in pixel xyxy, areas, centre)
                                          and the refs' sentences; world.scene_from_manifest rebuilds it
    sources.json                          name -> {source (a tasks.readers.SOURCES key), task, path,
                                          splits, options}, paths relative to DIR (mgv2.synth.synth_sources
                                          gives them absolute)
    refcoco/instances.json                COCO instances (refer toolkit layout): every object, bbox of the
                                          visible part, segmentation polygons (RLE when a hole)
    refcoco/refs(unc).p                   refer pickle (protocol 2, plain data): refs with sentences and
                                          split train/val/testA/testB
    refcoco_eval/refcoco_<split>.json     MiniGPT-v2 evaluation json {img_id, sents, bbox, height, width}
                                          for val, testA, testB
    coco_det/instances_<train|val>.json   COCO detection files per split (val = val+testA+testB images)
    vsr/<train|dev|test>.jsonl            VSR: {image, caption, label, relation, subj, obj, ...}; true and
                                          false statements about two objects of unique kinds
    vqav2/v2_OpenEnded_mscoco_<train|val>2014_questions.json
    vqav2/v2_mscoco_<train|val>2014_annotations.json
                                          VQAv2 pair, 10 answers per question (count, colour, kind, side,
                                          yes/no); data_subtype is "train2014" in both (the image names)
    gqa/<train|testdev>_balanced_questions.json
                                          GQA questions {qid: {imageId, question, answer, fullAnswer, types..}}
    flickr30k/groundedcaption[_val].json  MiniGPT-v2's Flickr30k files: {image_id, grounded_caption}
    flickr30k/captiontobbox[_val].json    {image_id, caption, output: "<p>..</p> {<..>}<delim>.."}
    flickr30k/phrasetobbox[_val].json     {image_id, phrase, bbox: "{<..>}<delim>{<..>}"}
    coco_caption/coco_karpathy_<train|val|test>.json
                                          LAVIS Karpathy captions (train: one entry per caption; val/test:
                                          {image, caption: [5]}), image paths relative to DIR
    llava/conversation_58k.json, detail_23k.json, complex_reasoning_77k.json
                                          LLaVA-Instruct json {id, image, conversations: [{from, value}]}
    text/alpaca.json                      Alpaca-style {instruction, input, output} (no pictures)
    text/unnatural_instructions.json      MiniGPT-v2's unnatural-instructions list {instruction, instances}
    pairs/shard-<n:06d>.tar               webdataset shards of train pictures: <key>.jpg/.txt/.json

Box text in the Flickr30k files is written with :mod:`mgv2.boxes` (relative to each picture's
own width and height).
"""

from mgv2.synth.export import SynthError, assign_splits, export, image_stem, synth_sources
from mgv2.synth.world import Scene, SceneObject, find_scene, make_scene, scene_from_manifest

__all__ = [
    "Scene",
    "SceneObject",
    "SynthError",
    "assign_splits",
    "export",
    "find_scene",
    "image_stem",
    "make_scene",
    "scene_from_manifest",
    "synth_sources",
]
