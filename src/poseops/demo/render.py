"""Drawing the demo: the arena, the animals (tail, body, head, ears), bedding patches and floor
markers, with OpenCV (imported inside the functions); which keypoints an animal's body hides;
writing frames (PNG) and videos (mp4v). Images are BGR uint8, height x width x 3.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np

from poseops.config.demo import BODYPARTS, DemoParams
from poseops.core.errors import PoseopsError
from poseops.core.fileio import atomic_path
from poseops.demo.simulate import individuals, walk_bounds, wall_px

log = logging.getLogger(__name__)

_SHIFT = 4  # cv2 sub-pixel drawing: coordinates * 16
_ONE = 1 << _SHIFT


def _pt(xy: np.ndarray) -> tuple[int, int]:
    return int(round(float(xy[0]) * _ONE)), int(round(float(xy[1]) * _ONE))


def background(p: DemoParams, rng: np.random.Generator) -> np.ndarray:
    """Grey arena floor with a lighting gradient and texture, darker walls (BGR uint8, H x W x 3)."""
    import cv2

    h, w = p.height, p.width
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    gx, gy = rng.uniform(-0.15, 0.15, 2)
    level = rng.uniform(150, 175)
    floor = level * (1 + gx * (xx / w - 0.5) + gy * (yy / h - 0.5))
    texture = cv2.GaussianBlur(rng.normal(0, 6, (h, w)), (0, 0), 1.2)
    img = floor + texture
    wall = wall_px(p)
    inner = np.zeros((h, w), bool)
    inner[wall:h - wall, wall:w - wall] = True
    img = np.where(inner, img, level * 0.45 + texture)
    # the walls' shadow on the floor
    dist = np.minimum.reduce([xx - wall, yy - wall, (w - wall - 1) - xx, (h - wall - 1) - yy])
    shadow = np.where(inner, np.clip(1 - dist / 4.0, 0, 1) * 25, 0)
    img = np.clip(img - shadow, 0, 255)
    tint = np.array([1.0, 1.0, 0.97])  # slightly warm grey (B, G, R scale)
    return np.clip(img[..., None] * tint[::-1], 0, 255).astype(np.uint8)


def render_frame(
    bg: np.ndarray,
    poses: np.ndarray,
    kps: np.ndarray,
    t: int,
    rng: np.random.Generator,
    patches: np.ndarray | None = None,
) -> np.ndarray:
    """Draw the animals (tail, body, head, ears) at poses[:, t] onto a copy of bg, bottom one
    first (poses (animals, frames, 4), kps (animals, frames, 4, 2), in depth order), then
    bedding patches centred on ``patches`` (m, 2) (the occluded keypoints), plus sensor noise.
    Returns BGR uint8."""
    import cv2

    img = bg.copy()
    for pose, kp in zip(poses, kps, strict=True):
        _draw_animal(img, pose[t], kp[t], t)
    for xy in patches if patches is not None else []:  # bedding kicked over the keypoint hides it
        x, y = xy
        col = tuple(int(v) for v in bg[int(np.clip(y, 0, bg.shape[0] - 1)),
                                       int(np.clip(x, 0, bg.shape[1] - 1))])
        cv2.ellipse(img, _pt(xy), (int(4.5 * _ONE), int(3.5 * _ONE)),
                    float(rng.uniform(0, 180)), 0, 360, col, -1, cv2.LINE_AA, _SHIFT)
    noise = rng.normal(0, 2.5, img.shape)
    return np.clip(img + noise, 0, 255).astype(np.uint8)


def render_video(bg: np.ndarray, poses: np.ndarray, kps: np.ndarray, pts: np.ndarray,
                 rng: np.random.Generator, hidden: dict[int, list[int]],
                 clutter: dict[int, np.ndarray] | None = None) -> list[np.ndarray]:
    """Every frame of a video (:func:`render_frame`; poses and kps in depth order), a bedding
    patch over the keypoints ``hidden[t]`` (indices into ``pts[t]``, (keypoints, 2)) of frame t,
    and one over each point of ``clutter[t]`` (m, 2) (``demo.clutter``: labeled, partly hidden)."""
    clutter = clutter or {}
    out = []
    for t in range(len(pts)):
        at = [pts[t][hidden[t]]] if t in hidden else []
        at += [clutter[t]] if t in clutter else []
        out.append(render_frame(bg, poses, kps, t, rng, np.concatenate(at) if at else None))
    return out


def _draw_animal(img: np.ndarray, pose_t: np.ndarray, kps_t: np.ndarray, t: int,
                 mask: bool = False) -> None:
    """Draw one animal in place. ``mask``: its body outline (no tail: too thin to hide a
    keypoint) in 255 on a one-channel image, the area that hides what lies beneath."""
    import cv2

    cx, cy, th, yaw = pose_t
    u = np.array([math.cos(th), math.sin(th)])
    psi = th + yaw
    hd = np.array([math.cos(psi), math.sin(psi)])
    c = np.array([cx, cy])
    snout, leftear, rightear, tailbase = kps_t
    aa = cv2.LINE_8 if mask else cv2.LINE_AA
    body_col: tuple[int, ...] = (255,) if mask else (48, 46, 44)
    ear_col: tuple[int, ...] = (255,) if mask else (120, 128, 180)
    snout_col: tuple[int, ...] = (255,) if mask else (120, 125, 185)
    if not mask:  # tail: a wagging curve behind the tail base
        s = np.linspace(0, 1, 8)
        perp = np.array([-u[1], u[0]])
        wag = 2.5 * np.sin(2 * math.pi * (s * 0.8 + t * 0.07))
        tail = tailbase[None] - (s[:, None] * 18.0) * u[None] + (wag * s)[:, None] * perp[None]
        pts = np.array([_pt(q) for q in tail], np.int32).reshape(-1, 1, 2)
        cv2.polylines(img, [pts], False, (95, 100, 130), 2, aa, _SHIFT)
    cv2.ellipse(img, _pt(c - 0.5 * u), (int(10.5 * _ONE), int(5.8 * _ONE)), math.degrees(th), 0, 360,
                body_col, -1, aa, _SHIFT)
    neck = c + 8.0 * u
    cv2.ellipse(img, _pt(neck + 3.0 * hd), (int(5.3 * _ONE), int(3.4 * _ONE)), math.degrees(psi),
                0, 360, body_col, -1, aa, _SHIFT)
    for ear in (leftear, rightear):
        cv2.circle(img, _pt(ear), int(2.4 * _ONE), ear_col, -1, aa, _SHIFT)
    cv2.circle(img, _pt(snout), int(1.2 * _ONE), snout_col, -1, aa, _SHIFT)


def body_mask(p: DemoParams, pose_t: np.ndarray, kps_t: np.ndarray) -> np.ndarray:
    """Pixels at least HIDE_DEPTH_PX inside one animal's body (bool, height x width): a keypoint
    there is hidden; one nearer the outline still shows enough to be labeled."""
    import cv2

    m = np.zeros((p.height, p.width), np.uint8)
    _draw_animal(m, pose_t, kps_t, 0, mask=True)
    k = 2 * HIDE_DEPTH_PX + 1
    return cv2.erode(m, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))) > 0


HIDE_DEPTH_PX = 2


def hidden_by_animals(p: DemoParams, poses: np.ndarray, kps: np.ndarray, marks: np.ndarray,
                      depth: np.ndarray, t: int) -> list[str]:
    """Which animal (name) hides each keypoint of frame t ("" = visible), keypoints in
    ``keypoint_layout`` order. A keypoint is hidden when its pixel lies under the body of an
    animal drawn above its own (``depth``: animal indices bottom to top); floor markers
    (``marks``) lie under every animal."""
    names = individuals(p)
    masks = {a: body_mask(p, poses[a, t], kps[a, t]) for a in range(len(poses))}
    level = {int(a): i for i, a in enumerate(depth)}
    pts = np.concatenate([kps[:, t].reshape(-1, 2), marks])
    owner = [a for a in range(len(poses)) for _ in BODYPARTS] + [-1] * len(marks)
    out = []
    for (x, y), a in zip(pts, owner, strict=True):
        r = int(np.clip(round(float(y)), 0, p.height - 1))
        c = int(np.clip(round(float(x)), 0, p.width - 1))
        above = [b for b in depth[::-1] if a < 0 or level[int(b)] > level[a]]  # top first
        out.append(next((names[int(b)] for b in above if masks[int(b)][r, c]), ""))
    return out


def draw_markers(p: DemoParams, bg: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Draw the unique bodyparts (pale floor markers, one per name, at random places on the
    arena floor away from the walls) into bg; returns their positions (markers, 2)."""
    import cv2

    lo, hi = walk_bounds(p)
    marks = lo + rng.random((len(p.unique_bodyparts), 2)) * (hi - lo)
    for xy in marks:
        cv2.circle(bg, _pt(xy), int(2.5 * _ONE), (205, 225, 235), -1, cv2.LINE_AA, _SHIFT)
    return marks


def write_video(path: Path, frames: list[np.ndarray], fps: int) -> None:
    import cv2

    h, w = frames[0].shape[:2]
    with atomic_path(path) as tmp:
        tmp_mp4 = tmp.with_suffix(".mp4")  # the writer picks the container from the suffix
        writer = cv2.VideoWriter(str(tmp_mp4), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
        if not writer.isOpened():
            raise PoseopsError("OpenCV cannot open an mp4v video writer", file=path)
        for f in frames:
            writer.write(f)
        writer.release()
        tmp_mp4.replace(tmp)


def write_png(path: Path, img: np.ndarray) -> None:
    import cv2

    ok, buf = cv2.imencode(".png", img)
    if not ok:
        raise PoseopsError("cannot encode PNG", file=path)
    path.write_bytes(buf.tobytes())
