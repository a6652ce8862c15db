"""Everything the behaviour stage computes, from tidy tables to its output tables (pure).

Inputs: raw (and filtered) tidy predictions ``video, frame, bodypart, x, y, likelihood`` (tracked
multi-animal: with an ``individual`` column; then every table below is per (video, individual):
one trajectory per animal, the unique bodyparts ``single`` left out of the reference point), the
metadata table (video + condition ...), per-video units (:class:`VideoUnits`), the manual scoring
(``video, frame, x, y``). Outputs (:class:`BehaviourTables`):

- ``quality``: per video, bodypart (+ ``centroid``, the reference point) and ``filtered``
  (False / True): :mod:`poseops.behaviour.quality` metrics, with the metadata columns.
- ``behaviour``: per video and ``source``: ``model`` (the (filtered) reference point, every
  frame), ``model_scored_frames`` (the same, on the manually scored frames only) and ``manual``:
  the endpoints with the metadata columns.
- ``agreement``: per endpoint, manual vs model_scored_frames (same frames, same sampling).
- ``position_error``: per scored frame, the model's reference point vs the manual point.
- ``effects``: per endpoint and condition, Hedges' g vs the control from the manual scoring and
  from the model (``model_frames``: ``scored`` = model_scored_frames, ``all`` = model).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from poseops.behaviour import agreement as A
from poseops.behaviour import quality as Q
from poseops.behaviour.endpoints import (
    ENDPOINTS,
    EndpointParams,
    endpoints,
    reference_track,
    track_keys,
)
from poseops.behaviour.inputs import VideoUnits
from poseops.config.behaviour import BehaviourParams
from poseops.core import schema as S

CENTROID = "centroid"  # bodypart name of the reference point in the quality table
AGREEMENT_ENDPOINTS = ["distance_cm", "mean_speed_cm_s", "median_speed_cm_s", "immobile_s",
                       "centre_share", "centre_entries"]


@dataclass
class BehaviourTables:
    quality: pd.DataFrame
    behaviour: pd.DataFrame
    reference: pd.DataFrame  # the model's reference track (video, frame, x, y, n_points)
    agreement: pd.DataFrame | None = None
    position_error: pd.DataFrame | None = None
    effects: pd.DataFrame | None = None
    summary: dict[str, Any] = field(default_factory=dict)
    animal_count: pd.DataFrame | None = None  # tracked multi-animal: expected-animals share


def _with_meta(df: pd.DataFrame, meta: pd.DataFrame | None) -> pd.DataFrame:
    if meta is None or df.empty:
        return df
    cols = [c for c in meta.columns if c != S.VIDEO and c not in df.columns]
    return df.merge(meta[[S.VIDEO, *cols]], on=S.VIDEO, how="left")


def quality_table(preds: pd.DataFrame, ref: pd.DataFrame, params: BehaviourParams,
                  filtered: bool) -> pd.DataFrame:
    """Quality per video x [individual x] bodypart and of the reference point (likelihood: its
    mean over the reference bodyparts)."""
    keys = track_keys(preds)
    q = Q.video_quality(preds, params.pcutoff, params.jump_px, (*keys, S.BODYPART))
    lik = (preds[preds[S.BODYPART].isin(params.reference)]
           .groupby([*keys, S.FRAME])[S.LIKELIHOOD].mean().rename(S.LIKELIHOOD))
    r = ref.join(lik, on=[*keys, S.FRAME]).assign(bodypart=CENTROID)
    qc = Q.video_quality(r, params.pcutoff, params.jump_px, (*keys, S.BODYPART))
    return pd.concat([q, qc], ignore_index=True).assign(filtered=filtered)


def endpoint_table(tracks: pd.DataFrame, units: dict[str, VideoUnits],
                   params: BehaviourParams, source: str) -> pd.DataFrame:
    """Per video (and individual) of ``tracks`` (video, [individual,] frame, x, y): the
    endpoints, tagged with ``source``."""
    keys = track_keys(tracks)
    rows = []
    for key, t in tracks.groupby(keys, sort=True):
        key = dict(zip(keys, key, strict=True))
        u = units[str(key[S.VIDEO])]
        ep = EndpointParams(u.fps, u.px_per_cm, params.immobile_speed_cm_s,
                            params.immobile_min_s, params.centre_fraction)
        rows.append({**key, "source": source, "fps": u.fps, "px_per_cm": u.px_per_cm,
                     "n_samples": int(t[[S.X, S.Y]].notna().all(axis=1).sum()),
                     **endpoints(t, ep, u.arena)})
    return pd.DataFrame(rows, columns=[*keys, "source", "fps", "px_per_cm", "n_samples",
                                       *ENDPOINTS])


def behaviour_tables(raw: pd.DataFrame, filtered: pd.DataFrame | None, meta: pd.DataFrame | None,
                     units: dict[str, VideoUnits], manual: pd.DataFrame | None,
                     params: BehaviourParams, control: str | None) -> BehaviourTables:
    """Every table of the stage; see the module docstring."""
    ref_raw = reference_track(raw, params.reference, params.pcutoff)
    quality = [quality_table(raw, ref_raw, params, False)]
    ref = ref_raw
    if filtered is not None:
        ref = reference_track(filtered, params.reference, params.pcutoff)
        quality.append(quality_table(filtered, ref, params, True))
    model = endpoint_table(ref, units, params, "model")
    out = BehaviourTables(_with_meta(pd.concat(quality, ignore_index=True), meta), model, ref)
    parts = [model]
    if manual is not None:
        manual = manual[manual[S.VIDEO].isin(set(ref[S.VIDEO]))]
    if manual is not None and not manual.empty:
        on = [*track_keys(ref), S.FRAME]
        scored = manual[on].merge(ref, on=on, how="left")
        man = endpoint_table(manual, units, params, "manual")
        mod = endpoint_table(scored, units, params, "model_scored_frames")
        parts += [mod, man]
        out.agreement = A.agreement_table(man, mod, AGREEMENT_ENDPOINTS)
        out.position_error = _with_meta(A.position_errors(manual, ref), meta)
        if meta is not None and S.CONDITION in meta.columns and control is not None:
            effs = []
            for frames, m in (("scored", mod), ("all", model)):
                effs.append(A.effect_table(_with_meta(man, meta), _with_meta(m, meta),
                                           AGREEMENT_ENDPOINTS, control, params.n_boot,
                                           params.ci, params.seed).assign(model_frames=frames))
            out.effects = pd.concat(effs, ignore_index=True)
    out.behaviour = _with_meta(pd.concat(parts, ignore_index=True), meta)
    out.summary = summary(out, params, control)
    return out


def _num(v: Any) -> float | None:
    v = float(v)
    return v if np.isfinite(v) else None


def summary(t: BehaviourTables, params: BehaviourParams, control: str | None) -> dict[str, Any]:
    """The headline numbers (DVC metrics): quality of the reference point raw / filtered,
    agreement per endpoint, position error, effects."""
    q = t.quality[t.quality[S.BODYPART] == CENTROID]
    s: dict[str, Any] = {"n_videos": int(t.behaviour[S.VIDEO].nunique()),
                         "filter": params.filter, "reference": list(params.reference)}
    if S.INDIVIDUAL in t.behaviour.columns:  # tracked multi-animal: one track per individual
        s["n_tracks"] = int(len(t.behaviour[t.behaviour["source"] == "model"]))
    for flag, name in ((False, "raw"), (True, "filtered")):
        qq = q[q["filtered"] == flag]
        if len(qq):
            s[f"quality_{name}"] = {
                "jitter_px_median": _num(qq["jitter_px"].median()),
                "jump_rate_mean": _num(qq["jump_rate"].mean()),
                "low_likelihood_share_mean": _num(qq["low_likelihood_share"].mean()),
                "longest_low_run_max": int(qq["longest_low_run"].max()),
            }
    model = t.behaviour[t.behaviour["source"] == "model"]
    if S.CONDITION in model.columns:
        s["endpoints_by_condition"] = {
            str(c): {e: _num(g[e].mean()) for e in AGREEMENT_ENDPOINTS}
            for c, g in model.groupby(S.CONDITION, sort=False)}
    if t.agreement is not None:
        s["agreement"] = {r["endpoint"]: {k: _num(r[k]) for k in
                                          ("icc2_1", "icc2_1_lo", "icc3_1", "ba_bias",
                                           "ba_loa_lo", "ba_loa_hi", "pearson_r", "slope")}
                          for _, r in t.agreement.iterrows()}
    if t.position_error is not None:
        e = t.position_error["error_px"].dropna()
        s["position_error_px"] = {"n_frames": int(len(e)), "mean": _num(e.mean()),
                                  "median": _num(e.median()), "p95": _num(e.quantile(0.95))}
    if t.agreement is not None:
        s["verdict"] = verdict(t, params.min_icc)
    if t.effects is not None:
        s["control"] = control
        s["effects"] = {f"{r['endpoint']}:{r['condition']}:{r['model_frames']}": {
            "g_manual": _num(r["g_manual"]), "g_manual_lo": _num(r["g_manual_lo"]),
            "g_manual_hi": _num(r["g_manual_hi"]), "g_model": _num(r["g_model"]),
            "same_sign": bool(r["same_sign"]),
            "within_manual_ci": bool(r["model_within_manual_ci"])}
            for _, r in t.effects.iterrows()}
    return s


def verdict(t: BehaviourTables, min_icc: float) -> dict[str, Any]:
    """Per endpoint: does the model agree with the manual scoring (ICC(2,1)'s lower CI bound >=
    ``min_icc``) and preserve every condition effect (same sign and the model's g on the scored
    frames, within the manual bootstrap CI)? ``valid`` = both (None where undefined)."""
    out: dict[str, Any] = {}
    assert t.agreement is not None
    for _, r in t.agreement.iterrows():
        e = r["endpoint"]
        icc_ok = bool(r["icc2_1_lo"] >= min_icc) if np.isfinite(r["icc2_1_lo"]) else None
        manual = t.behaviour.loc[t.behaviour["source"] == "manual", e].dropna()
        if icc_ok is None and manual.nunique() > 1:  # the manual scoring varies, the model
            icc_ok = False  # gives no comparable values (nothing above pcutoff, one video ...)
        eff_ok = None
        if t.effects is not None:
            ee = t.effects[(t.effects["endpoint"] == e) & (t.effects["model_frames"] == "scored")
                           & t.effects["g_manual"].notna()]
            if len(ee):
                eff_ok = bool((ee["same_sign"] & ee["model_within_manual_ci"]).all())
        valid = None if icc_ok is None else bool(icc_ok and eff_ok is not False)
        out[e] = {"icc_ok": icc_ok, "effect_ok": eff_ok, "valid": valid}
    return out
