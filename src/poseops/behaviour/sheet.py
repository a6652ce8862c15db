"""Looking is believing: the worst frames of each analyzed video (lowest likelihood, then the
largest jerk of the reference point) as a contact sheet with the predicted keypoints drawn
(``worst_frames.png``) and listed (``worst_frames.csv``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from poseops.core import schema as S

WORST_COLUMNS = [S.VIDEO, S.FRAME, "min_likelihood", "jerk_px"]


def worst_frames(preds: pd.DataFrame, ref: pd.DataFrame, n: int = 4,
                 min_gap: int = 5) -> pd.DataFrame:
    """Per video, ``n`` frames at least ``min_gap`` apart, worst first: lowest minimum
    likelihood over bodyparts, ties broken by the reference point's |second difference|."""
    lik = preds.groupby([S.VIDEO, S.FRAME])[S.LIKELIHOOD].min().rename("min_likelihood")
    rows = []
    for video, r in _jerk(ref).groupby(S.VIDEO, sort=True):
        t = r[[S.VIDEO, S.FRAME, "jerk_px"]].join(lik, on=[S.VIDEO, S.FRAME])
        t = t.sort_values(["min_likelihood", "jerk_px"], ascending=[True, False],
                          na_position="last")
        picked: list[int] = []
        for f in t[S.FRAME]:
            if all(abs(int(f) - p) >= min_gap for p in picked):
                picked.append(int(f))
            if len(picked) == n:
                break
        rows.append(t[t[S.FRAME].isin(picked)].assign(video=video))
    if not rows:
        return pd.DataFrame(columns=WORST_COLUMNS)
    return pd.concat(rows, ignore_index=True)[WORST_COLUMNS]


def _jerk(ref: pd.DataFrame) -> pd.DataFrame:
    """Per (video, frame): the reference point's |second difference| (tracked multi-animal: the
    largest over the individuals)."""
    keys = [S.VIDEO, S.INDIVIDUAL] if S.INDIVIDUAL in ref.columns else [S.VIDEO]
    parts = []
    for _, r in ref.groupby(keys, sort=True):
        r = r.sort_values(S.FRAME)
        xy = r[[S.X, S.Y]].to_numpy(float)
        jerk = np.full(len(r), np.nan)
        if len(r) >= 3:
            jerk[1:-1] = np.hypot(*(xy[2:] - 2 * xy[1:-1] + xy[:-2]).T)
        parts.append(r[[S.VIDEO, S.FRAME]].assign(jerk_px=jerk))
    if not parts:
        return pd.DataFrame(columns=[S.VIDEO, S.FRAME, "jerk_px"])
    j = pd.concat(parts, ignore_index=True)
    return j.groupby([S.VIDEO, S.FRAME], sort=True)["jerk_px"].max().reset_index()


def _frames(video: Path, frames: list[int]) -> dict[int, np.ndarray]:
    import cv2

    cap = cv2.VideoCapture(str(video))
    out = {}
    for f in frames:
        cap.set(cv2.CAP_PROP_POS_FRAMES, f)
        ok, img = cap.read()
        if ok:
            out[f] = img[..., ::-1]
    cap.release()
    return out


def contact_sheet(worst: pd.DataFrame, preds: pd.DataFrame, pcutoff: float, path: Path,
                  max_videos: int = 6) -> Path | None:
    """Draw the worst frames (rows: videos, columns: frames) with the predicted keypoints
    (filled: >= pcutoff, hollow: below); None when no video file can be read."""
    from poseops.behaviour.figures import _plt, _save

    videos = list(dict.fromkeys(worst[S.VIDEO]))[:max_videos]
    paths = preds.drop_duplicates(S.VIDEO).set_index(S.VIDEO).get("video_path")
    if paths is None or not videos:
        return None
    n = int(worst.groupby(S.VIDEO).size().max())
    plt = _plt()
    fig, axes = plt.subplots(len(videos), n, figsize=(2.2 * n, 1.8 * len(videos)), squeeze=False)
    drawn = 0
    for i, v in enumerate(videos):
        w = worst[worst[S.VIDEO] == v].reset_index(drop=True)
        imgs = _frames(Path(str(paths.get(v, ""))), [int(f) for f in w[S.FRAME]])
        for j in range(n):
            ax = axes[i][j]
            ax.axis("off")
            if j >= len(w) or int(w.at[j, S.FRAME]) not in imgs:
                continue
            f = int(w.at[j, S.FRAME])
            ax.imshow(imgs[f])
            p = preds[(preds[S.VIDEO] == v) & (preds[S.FRAME] == f)]
            ok = p[S.LIKELIHOOD] >= pcutoff
            ax.scatter(p.loc[ok, S.X], p.loc[ok, S.Y], s=10, c="tab:red")
            ax.scatter(p.loc[~ok, S.X], p.loc[~ok, S.Y], s=12, facecolors="none",
                       edgecolors="yellow")
            ax.set_title(f"{v} f{f} p={w.at[j, 'min_likelihood']:.2f}", fontsize=6)
            drawn += 1
    if not drawn:
        plt.close(fig)
        return None
    return _save(fig, path)
