"""ActivityNet-style JSON: the official ``database`` file and a ``results`` file read as ground truth.

``activitynet``: ``{"version", "taxonomy"?, "database": {id: {"subset",
"duration"?, "fps"?, "annotations": [{"segment": [s, e], "label",
"label_id"?}]}}}`` -- ActivityNet 1.3, HACS, and ActionFormer's
``thumos14.json`` (subsets ``Validation`` / ``Test``, ``label_id``).

``activitynet-results``: ``{"results": {id: [{"segment", "label", "score"?}]}}``
(the official ``sample_detection_prediction.json`` *is* the ActivityNet 1.3
validation ground truth). It says nothing about subsets.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from tadkit.data.formats import checks as ck
from tadkit.data.formats.table import (AnnotationTable, TableBuilder, Taxonomy, is_ambiguous,
                                       normalize_subset)


def read_database(p: Path, doc: Any) -> AnnotationTable:
    """The official ActivityNet / HACS / ActionFormer JSON, already parsed."""
    obj = ck.mapping(p, doc, "top level")
    db = ck.mapping(p, obj.get("database"), "'database'")
    out = TableBuilder()
    if obj.get("taxonomy") not in (None, []):
        out.taxonomy = _taxonomy(p, obj["taxonomy"])
    for vid, entry in db.items():
        where = f"database[{vid!r}]"
        ck.video_id(p, vid, where)
        entry = ck.mapping(p, entry, where)
        subset = normalize_subset(ck.opt_str(p, entry.get("subset"), f"{where}.subset"))
        duration = ck.opt_number(p, entry.get("duration", entry.get("duration_second")),
                                 f"{where}.duration", positive=True)
        fps = ck.opt_number(p, entry.get("fps"), f"{where}.fps", positive=True)
        out.add_video(vid, duration, fps, subset)
        for j, a in enumerate(annotation_list(p, entry, where)):
            w = f"{where}.annotations[{j}]"
            a = ck.mapping(p, a, w)
            s, e = ck.segment(p, a, w)
            label = ck.label(p, a, w)
            out.add(vid, s, e, label, subset)
            lid = a.get("label_id")
            if isinstance(lid, int) and not isinstance(lid, bool) and not is_ambiguous(label):
                out.label_ids.setdefault(label, lid)
    return out.build(p, "activitynet")


def read_results(p: Path, doc: Any) -> AnnotationTable:
    """A ``results`` file (detections) read as ground truth: scores are ignored."""
    obj = ck.mapping(p, doc, "top level")
    res = ck.mapping(p, obj.get("results"), "'results'")
    out = TableBuilder()
    for vid, items in res.items():
        where = f"results[{vid!r}]"
        ck.video_id(p, vid, where)
        out.add_video(vid)
        for j, a in enumerate(ck.sequence(p, items, where)):
            w = f"{where}[{j}]"
            a = ck.mapping(p, a, w)
            s, e = ck.segment(p, a, w)
            out.add(vid, s, e, ck.label(p, a, w), out.videos[vid]["subset"])
    return out.build(p, "activitynet-results")


def annotation_list(p: Path, entry: dict, where: str) -> list[Any]:
    """An entry's ``annotations`` (missing or null means none)."""
    items = entry.get("annotations")
    return [] if items is None else ck.sequence(p, items, f"{where}.annotations")


def _taxonomy(p: Path, tax: Any) -> Taxonomy:
    nodes = ck.sequence(p, tax, "'taxonomy'")
    names, parents = [], set()
    for i, node in enumerate(nodes):
        node = ck.mapping(p, node, f"taxonomy[{i}]")
        name = node.get("nodeName")
        if isinstance(name, str):
            names.append(name)
        parent = node.get("parentName")
        if isinstance(parent, str):
            parents.add(parent)
    return Taxonomy(names, [n for n in names if n not in parents])
