"""Seed ensembles: how much N models of one config (``ablation.seeds``, or ``train.seed`` varied)
disagree about a keypoint. Pure functions over predictions tables.

Disagreement of a keypoint = the variance of its predicted position across the members: the mean
squared distance of the members' predictions to their mean position, ``var_x + var_y``
(population variance, ddof 0, as Lightning Pose's ensemble variance), in px²; ``sd_px`` is its
square root (px). A frame's score is its largest keypoint disagreement (``max_sd_px``) and the
mean over its keypoints: a model's likelihood is a poorly calibrated outlier signal, the spread
of independently trained models is a better one.

Seed spread for ``poseops compare`` (:func:`read_seed_spread`, :func:`seed_noise`): the baseline
config's seed-to-seed SD (ddof 1) of its test RMSE, from an ablation / ensemble run of it, and the
candidate's gain in units of that SD ("gain 0.40 px is within seed-to-seed noise (SD 0.60 px over
3 seeds ...)").
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from poseops.core import schema as S
from poseops.core.errors import PoseopsError

MEMBER = "member"


def _keys(preds: pd.DataFrame) -> list[str]:
    if S.ASSEMBLY in preds.columns:
        raise PoseopsError("ensemble disagreement needs single-animal (or tracked) predictions: "
                           "multi-animal assemblies are unordered, so members cannot be paired")
    if S.IMAGE in preds.columns:
        return [S.IMAGE, S.BODYPART]
    S.require_columns(preds, [S.VIDEO, S.FRAME, S.BODYPART], "predictions")
    return [S.VIDEO, S.FRAME, S.BODYPART]


def stack_members(members: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """One long table of every member's predictions with a ``member`` column."""
    if len(members) < 2:
        raise PoseopsError(f"an ensemble needs >= 2 members, got {len(members)}")
    return pd.concat([df.assign(**{MEMBER: str(name)}) for name, df in members.items()],
                     ignore_index=True)


def ensemble_disagreement(preds: pd.DataFrame | Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Per keypoint ((image, bodypart) or (video, frame, bodypart)): ``n_members`` (members with
    a finite prediction), ``mean_x``, ``mean_y``, ``var_x``, ``var_y``, ``variance_px2`` (var_x +
    var_y) and ``sd_px``; NaN below two members. ``preds``: member -> predictions table, or one
    table with a ``member`` column; each member predicts each keypoint at most once."""
    long = stack_members(preds) if isinstance(preds, Mapping) else preds
    S.require_columns(long, [MEMBER, S.X, S.Y], "predictions")
    keys = _keys(long)
    dup = long.duplicated([*keys, MEMBER])
    if dup.any():
        row = long[dup].iloc[0]
        raise PoseopsError(f"member {row[MEMBER]!r} predicts a keypoint twice",
                           row=str(row[keys[0]]), bodypart=row[S.BODYPART])
    ok = np.isfinite(long[S.X].to_numpy(float)) & np.isfinite(long[S.Y].to_numpy(float))
    g = long[ok].groupby(keys, sort=True)
    out = g.agg(n_members=(MEMBER, "size"), mean_x=(S.X, "mean"), mean_y=(S.Y, "mean"))
    out["var_x"] = g[S.X].var(ddof=0)
    out["var_y"] = g[S.Y].var(ddof=0)
    few = out["n_members"] < 2
    out.loc[few, ["var_x", "var_y"]] = np.nan
    out["variance_px2"] = out["var_x"] + out["var_y"]
    out["sd_px"] = np.sqrt(out["variance_px2"])
    return out.reset_index()


def frame_disagreement(disagreement: pd.DataFrame) -> pd.DataFrame:
    """Per frame (image, or video + frame): ``max_sd_px`` and ``mean_sd_px`` over its keypoints
    (the outlier score: a frame where the members disagree about any keypoint)."""
    keys = [k for k in (S.IMAGE, S.VIDEO, S.FRAME) if k in disagreement.columns]
    keys = [S.IMAGE] if S.IMAGE in keys else keys
    g = disagreement.groupby(keys, sort=True)["sd_px"]
    return pd.DataFrame({"max_sd_px": g.max(), "mean_sd_px": g.mean()}).reset_index()


# ---------------------------------------------------------------- seed spread (for compare)
SPREAD_METRIC = "rmse_px"  # the headline number compare judges: true RMSE on the fixed test set
_GLOB = set("*?[")


def _read_table(path: Path) -> pd.DataFrame:
    try:
        return pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    except Exception as e:  # noqa: BLE001 - any reader failure is a user-facing bad file
        raise PoseopsError(f"compare.seed_spread: cannot read table: {e}", file=path) from e


def member_rmse(errors: Mapping[str, pd.DataFrame], split: str) -> pd.DataFrame:
    """Per member (one seed's errors table): its true RMSE over the finite errors of ``split``
    (as compare's ``rmse_px_baseline``): member, n_keypoints, rmse_px."""
    from poseops.refine.common import rmse

    rows = []
    for name, t in errors.items():
        S.require_columns(t, [S.ERROR_PX], f"errors table {name}")
        on = t[t[S.SPLIT] == split] if S.SPLIT in t.columns else t
        e = on[S.ERROR_PX].to_numpy(float)
        e = e[np.isfinite(e)]
        if not len(e):
            raise PoseopsError(f"compare.seed_spread: no finite {split!r} error", file=name)
        rows.append({MEMBER: str(name), "n_keypoints": len(e), SPREAD_METRIC: rmse(e)})
    return pd.DataFrame(rows)


def _spread_row(spread: pd.DataFrame, arm: str | None, source: Path) -> tuple[str, pd.Series]:
    """The ``rmse_px`` row of one arm of the ablation's spread.csv (arm: given, else the
    ablation's baseline from summary.json beside it, else the only arm)."""
    missing = [c for c in ("arm", "metric", "n_seeds", "mean", "sd") if c not in spread.columns]
    if missing:
        raise PoseopsError(f"compare.seed_spread: neither an ablation spread.csv (missing "
                           f"{missing}) nor a per-seed table ({SPREAD_METRIC} or {S.ERROR_PX} "
                           f"column); has {list(spread.columns)}", file=source)
    rows = spread[spread["metric"] == SPREAD_METRIC]
    arms = list(dict.fromkeys(rows["arm"].astype(str)))
    if arm is None:
        beside = source.parent / "summary.json"
        base = json.loads(beside.read_text()).get("baseline") if beside.is_file() else None
        arm = str(base) if base is not None else arms[0] if len(arms) == 1 else None
    if arm is None or arm not in arms:
        raise PoseopsError(f"compare.seed_spread_arm: {'no arm given' if arm is None else repr(arm)}"
                           f" (the table's arms with {SPREAD_METRIC}: {arms})", file=source)
    return arm, rows[rows["arm"].astype(str) == arm].iloc[0]


def _member_values(out: dict, errors: Mapping[str, pd.DataFrame], split: str) -> np.ndarray:
    """Each member's RMSE (:func:`member_rmse`), recorded in ``out["per_seed"]``."""
    per = member_rmse(errors, split)
    out["per_seed"] = per[[MEMBER, SPREAD_METRIC]].to_dict("records")
    return per[SPREAD_METRIC].to_numpy(float)


def read_seed_spread(ref: str | Path, split: str = S.TEST, arm: str | None = None) -> dict:
    """The baseline config's seed-to-seed SD (ddof 1) of its test RMSE, from ``ref``:

    - a glob of per-seed errors tables (``data/ablation/runs/current-*/eval/errors.parquet``):
      each seed's RMSE on ``split`` recomputed (:func:`member_rmse`);
    - an ablation reports folder (``reports/ablation``) or its ``spread.csv``: the ``rmse_px`` row
      of ``arm`` (default: the ablation's baseline arm);
    - a CSV of per-seed numbers with a ``rmse_px`` column (one row per seed);
    - one errors table (one seed: an error, a SD needs two).

    Returns source, arm, metric, n_seeds, mean_px, sd_px, per_seed (member, rmse_px records)."""
    ref = str(ref)
    out: dict = {"source": ref, "arm": arm, "metric": SPREAD_METRIC, "per_seed": []}
    if _GLOB & set(ref):
        from glob import glob

        files = sorted(glob(ref))
        if not files:
            raise PoseopsError("compare.seed_spread: no errors table matches this pattern", file=ref)
        values = _member_values(out, {f: _read_table(Path(f)) for f in files}, split)
    else:
        path = Path(ref)
        path = path / "spread.csv" if path.is_dir() else path
        if not path.is_file():
            raise PoseopsError("compare.seed_spread: no such file (an ablation reports folder, its "
                               "spread.csv, a per-seed CSV or a glob of errors tables)", file=path)
        table = _read_table(path)
        if S.ERROR_PX in table.columns:  # one errors table: one seed
            values = _member_values(out, {str(path): table}, split)
        elif SPREAD_METRIC in table.columns:
            values = table[SPREAD_METRIC].to_numpy(float)
            values = values[np.isfinite(values)]
            out["per_seed"] = table.to_dict("records")
        else:
            out["arm"], row = _spread_row(table, arm, path)
            out.update(n_seeds=int(row["n_seeds"]), mean_px=float(row["mean"]),
                       sd_px=float(row["sd"]))
            values = None
    if values is not None:
        out.update(n_seeds=len(values), mean_px=float(np.mean(values)) if len(values) else np.nan,
                   sd_px=float(np.std(values, ddof=1)) if len(values) > 1 else np.nan)
    if out["n_seeds"] < 2 or not np.isfinite(out["sd_px"]):
        raise PoseopsError(f"compare.seed_spread: a seed-to-seed SD needs >= 2 seeds with a "
                           f"{SPREAD_METRIC}, got {out['n_seeds']}", file=ref)
    return out


def seed_noise(gain_px: float, spread: Mapping, k: float) -> dict:
    """The candidate's gain (baseline RMSE - candidate RMSE, px; > 0 = better) against the
    baseline's seed-to-seed SD: ``gain_seed_sd`` = gain / SD, ``seed_noise`` 'within' (|gain| <
    ``k`` SD: two trainings of the baseline differ this much by their seed alone) or 'beyond',
    and the verdict as one line."""
    sd, n = float(spread["sd_px"]), int(spread["n_seeds"])
    ratio = gain_px / sd if sd > 0 and np.isfinite(gain_px) else np.nan
    where = f"SD {sd:.2f} px over {n} seeds"
    if not np.isfinite(ratio):
        status, text = "unknown", f"gain {gain_px:.2f} px vs a seed-to-seed {where}: not comparable"
    elif abs(ratio) < k:
        status = "within"
        text = (f"gain {gain_px:.2f} px is within seed-to-seed noise ({where}; {ratio:+.2f} SD, "
                f"|gain| < {k:g} SD)")
    else:
        status = "beyond"
        worse = " (the candidate is worse)" if gain_px < 0 else ""
        text = f"gain {gain_px:.2f} px{worse} is beyond seed-to-seed noise ({ratio:+.2f} SD; {where})"
    return {"gain_px": float(gain_px), "seed_sd_px": sd, "seed_n": n, "gain_seed_sd": float(ratio),
            "seed_noise": status, "seed_verdict": text}
