"""params.yaml sections of the refinement loop: ``extract``, ``analyze``, ``outliers``, ``merge``,
``compare`` (plain dataclasses, validated by :func:`poseops.config.loader.from_dict`)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Literal, get_args

from poseops.core import schema as S

log = logging.getLogger(__name__)

LikelihoodMode = Literal["any", "mean"]
"""outliers: ``any`` bodypart or the frame ``mean`` likelihood below p_bound flags a frame."""
LIKELIHOOD_MODES: tuple[str, ...] = get_args(LikelihoodMode)


@dataclass
class ExtractParams:
    """params.yaml ``extract``: frames for a first labeling round (``poseops extract``)."""

    videos: list[str] = field(default_factory=list)  # empty: every video in config video_sets
    n_frames: int = 30  # total frames to pick (split across conditions)
    balance_by: str | None = S.CONDITION  # metadata column given equal quotas; null = none
    resize: list[int] = field(default_factory=lambda: [32, 24])  # appearance features (w, h)
    step: int = 1  # consider every step-th frame
    skip_labeled: bool = True  # never re-pick frames already in labeled-data
    seed: int = 0
    write_frames: bool = True
    manifest: str = "data/refine/extract/manifest.csv"
    coverage: str = "data/refine/extract/coverage.csv"


@dataclass
class AnalyzeParams:
    """params.yaml ``analyze``: DLC video analysis with the current model (``poseops analyze``)."""

    # default videos when the CLI gets none (the demo's unlabeled recording)
    videos: list[str] = field(default_factory=lambda: ["data/raw/demo/videos/m1-s4.mp4"])
    config: str | None = None  # working DLC config.yaml; None: from <train_workdir>/run.json
    shuffle: int | None = None  # None: from run.json
    train_workdir: str = "data/train"
    snapshot_index: int | str | None = None  # None: the config's snapshotindex
    device: str = "cpu"
    batch_size: int = 8
    pcutoff: float | None = None  # None: the DLC config's pcutoff
    out: str = "data/refine/analyze"
    log_mlflow: bool = False  # log even without an active run (a new 'analyze' run)
    # multi-animal: DLC's tracking (tracklets + stitching, auto_track) -> an ``individual``
    # column (identities across frames, <video><scorer>_el.h5); false: untracked assemblies
    track: bool = False


@dataclass
class OutliersParams:
    """params.yaml ``outliers``: frames picked for relabeling (``poseops outliers``)."""

    predictions: str = "data/refine/analyze/predictions.parquet"
    p_bound: float = 0.6  # likelihood bound
    likelihood_mode: str = "any"  # one of LIKELIHOOD_MODES (checked by candidate_frames)
    epsilon: float = 20.0  # px, jump between consecutive frames
    uncertain_fraction: float = 0.05  # top fraction of least confident frames (per video)
    n_frames: int = 20  # frames to pick in total (split across conditions)
    balance_by: str | None = S.CONDITION
    resize: list[int] = field(default_factory=lambda: [32, 24])
    seed: int = 0
    write_frames: bool = True
    manifest: str = "data/refine/outliers/manifest.csv"
    # targeted refinement: score and pick only these bodyparts / conditions (empty: all)
    bodyparts: list[str] = field(default_factory=list)
    conditions: list[str] = field(default_factory=list)
    # frames a `merge --skip-unrefined` left unrelabeled: listed again (rule "pending");
    # the command reads it from params merge.pending (one place)
    pending: str = "data/refine/outliers/pending.csv"
    # seed ensemble (issue 24): predictions of the same videos and frames by other seeds' models
    # (same table as ``predictions``); rule ``disagreement``: a frame whose largest per-keypoint
    # SD across the members (``predictions`` + these) exceeds ensemble_sd_px. Empty: rule off
    ensemble: list[str] = field(default_factory=list)
    ensemble_sd_px: float = 5.0


@dataclass
class HardestParams:
    """params.yaml ``hardest``: the labeled frames with the highest error, for a relabeling check
    (``poseops hardest``)."""

    errors: str = "data/eval/errors.parquet"  # evaluate's errors table (command: evaluate.out)
    bodyparts: list[str] = field(default_factory=list)  # rank by these bodyparts (empty: all)
    conditions: list[str] = field(default_factory=list)  # only frames of these (empty: all)
    n_frames: int = 20
    splits: list[str] = field(default_factory=list)  # only these splits (empty: every split)
    write_frames: bool = True  # machinelabels-iter<N>.h5 (predictions) beside the labels
    manifest: str = "data/refine/hardest/manifest.csv"


@dataclass
class MergeParams:
    """params.yaml ``merge``: relabeled frames join the dataset (``poseops merge``)."""

    manifest: str = "data/refine/outliers/manifest.csv"  # frames picked for relabeling
    # the previous iteration's split and where later splits find it: params split.out and
    # split.fixed_split (one place, read by the command); the defaults mirror SplitParams
    split: str = "data/processed/split.csv"
    fixed_split: str = "data/processed/fixed_split.csv"
    require_labeled: bool = True  # each relabeled frame needs >= 1 labeled keypoint
    dvc: bool = True  # dvc add the project folder
    git: bool = True  # git commit + tag (skipped outside a git repository)
    tag_prefix: str = "iteration-"
    report: str = "reports/merge.json"
    skip_unrefined: bool = False  # merge the relabeled frames, list the others in ``pending``
    pending: str = "data/refine/outliers/pending.csv"  # frames left for the next round


@dataclass
class CompareParams:
    """params.yaml ``compare``: paired comparison of two models (``poseops compare``)."""

    split: str = S.TEST  # the fixed test set
    n_boot: int = 5000
    ci: float = 0.95
    seed: int = 0
    unit: str = S.VIDEO  # statistics over videos (frames of a video are not independent); image:
    # every frame independent (optimistic p-values and CIs); or animal, session, ...
    min_units: int = 5  # fewer units: NaN Wilcoxon p-value and bootstrap CI (with the reason)
    unchanged_tol_px: float = 0.5  # |delta mean| within this: "unchanged"
    worst_quantile: float = 0.95  # "worst 5 %" = errors at or above this quantile
    pcutoffs: list[float] = field(default_factory=lambda: [0.0, 0.1, 0.3, 0.6, 0.9])
    errors_pattern: str = "data/refine/iterations/iteration-{n}/errors.parquet"
    errors_artifact: str = "eval/errors.parquet"  # artifact of the training run (poseops evaluate)
    iteration_tag: str = "dlc_iteration"  # training-run tag holding the DLC iteration
    out: str = "reports/compare"
    log_mlflow: bool = True
    # the backward-compatibility gate (suite ``suite`` on compare's tables)
    gate: bool = True
    suite: str = "expectations/compare.json"
    max_rmse_rise_pct: float = 5.0  # test RMSE may rise at most this much (%)
    fail_on_error: bool = True  # a failed gate stops (exit 2); false: a warning
    champion_alias: str = "champion"  # registry alias moved to the candidate when it passes
    stop_change_pct: float = 2.0  # |test RMSE change| below this: "stop refining"
    history: str = "reports/iterations.csv"  # one row per iteration (+ .png figure)
    # where the candidate's run.json is when it is given as a file (command: train.workdir)
    train_workdir: str = "data/train"
    # merge's report: frames added / outliers found of the iteration it made (command: merge.report)
    merge_report: str = "reports/merge.json"
    # seed spread (issue 24): the baseline config's seed-to-seed SD of its test RMSE, from an
    # ablation reports folder / its spread.csv (arm: seed_spread_arm, default the ablation's
    # baseline), a per-seed CSV (column rmse_px) or a glob of per-seed errors tables; None: off
    seed_spread: str | None = None
    seed_spread_arm: str | None = None
    seed_noise_sd: float = 2.0  # |gain| below this many SDs: "within seed-to-seed noise"
    min_gain_seed_sd: float | None = None  # gate rule: gain / SD must reach this (None: off)
