"""BSN's ``anet_anno_action.json``: ``{"v_<id>": {"duration_second", "annotations", ...}}``.

The file has no subsets: they come from a ``video_info`` CSV (BSN ships
``video_info_new.csv`` beside it; :func:`tadkit.data.formats.read_table` picks
that up by default).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from tadkit.data.formats import checks as ck
from tadkit.data.formats.activitynet import annotation_list
from tadkit.data.formats.table import AnnotationTable, TableBuilder, normalize_subset


def read_bsn(p: Path, doc: Any) -> AnnotationTable:
    """BSN's annotation JSON, already parsed."""
    obj = ck.mapping(p, doc, "top level")
    out = TableBuilder()
    for vid, entry in obj.items():
        where = f"[{vid!r}]"
        ck.video_id(p, vid, where)
        entry = ck.mapping(p, entry, where)
        duration = ck.opt_number(p, entry.get("duration_second", entry.get("duration")),
                                 f"{where}.duration_second", positive=True)
        subset = normalize_subset(ck.opt_str(p, entry.get("subset"), f"{where}.subset"))
        out.add_video(vid, duration, math.nan, subset)
        for j, a in enumerate(annotation_list(p, entry, where)):
            w = f"{where}.annotations[{j}]"
            a = ck.mapping(p, a, w)
            s, e = ck.segment(p, a, w)
            out.add(vid, s, e, ck.label(p, a, w), subset)
    return out.build(p, "bsn")
