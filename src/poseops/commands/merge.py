"""`poseops merge`: relabeled outlier frames join the dataset as the next iteration (config.yaml
iteration + 1, fixed split, ``dvc add``, git commit and tag).

Reads params ``merge``, ``split`` (where the split is and where the fixed one goes) and
``project``; the work is :func:`poseops.refine.merge.merge_iteration`.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from poseops.config.pipeline import PipelineParams
from poseops.refine.merge import merge_iteration

log = logging.getLogger(__name__)


def run(
    project: str | Path | None = None,
    manifest: str | None = None,
    git: bool = True,
    params_file: str | Path | None = None,
    skip_unrefined: bool | None = None,
) -> dict:
    """params.yaml ``merge`` (``manifest`` overrides it; ``git=False``: no commit or tag;
    ``skip_unrefined`` overrides ``merge.skip_unrefined``), the
    split's paths from ``split``, the project folder and format from ``project`` ->
    :func:`merge_iteration`.
    Returns the merge report."""
    cfg = PipelineParams.load(params_file)
    params = cfg.merge
    sp = cfg.split
    params.split = sp.out
    params.fixed_split = sp.fixed_split or params.fixed_split
    if manifest:
        params.manifest = manifest
    if not git:
        params.git = False
    if skip_unrefined is not None:
        params.skip_unrefined = skip_unrefined
    return merge_iteration(params, project or cfg.project.path, fmt=cfg.project.format)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("merge", help="merge relabeled frames as the next iteration (DVC + git tag)")
    p.add_argument("--project", help="DLC project folder (default: params project.path)")
    p.add_argument("--manifest", help="outliers manifest (default: params merge.manifest)")
    p.add_argument("--no-git", action="store_true", help="do not commit/tag")
    p.add_argument("--skip-unrefined", action="store_const", const=True, default=None,
                   help="merge the relabeled frames, keep the others for the next round "
                        "(default: params merge.skip_unrefined)")
    p.set_defaults(func=_cli)


def _cli(args: argparse.Namespace) -> int:
    run(args.project, args.manifest, git=not args.no_git, skip_unrefined=args.skip_unrefined)
    return 0
