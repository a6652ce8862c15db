"""params.yaml as one typed object: ``cfg = PipelineParams.load(path)``, then ``cfg.consensus.out``.

Each attribute is one section, validated into its dataclass (:func:`poseops.config.loader.from_dict`:
types, unknown keys with the closest name) the first time a command reads it. The file is parsed
once per command; a stage validates only the sections it reads, so a mistake in another stage's
section (say ``sweep:``) does not stop ``poseops ingest``. Commands read other stages' output
paths through this object (``cfg.split.out``), never through a raw dict with a copied default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Generic, TypeVar, overload

from poseops.config.ablation import AblationParams
from poseops.config.behaviour import BehaviourParams
from poseops.config.data import (
    CompositionParams,
    ConsensusParams,
    IngestParams,
    ProjectParams,
    SplitParams,
    ValidateParams,
)
from poseops.config.demo import DemoParams
from poseops.config.evaluate import EvaluateParams, ReportParams
from poseops.config.loader import from_dict, load_params, params_path
from poseops.config.quality import ValidateReportParams
from poseops.config.refine import (
    AnalyzeParams,
    CompareParams,
    ExtractParams,
    HardestParams,
    MergeParams,
    OutliersParams,
)
from poseops.config.sweep import SweepParams
from poseops.config.train import TrainParams
from poseops.core.errors import PoseopsError

T = TypeVar("T")


class _Section(Generic[T]):
    """A typed section attribute: ``cfg.<name>`` -> the validated ``cls`` instance (cached)."""

    def __init__(self, cls: type[T]) -> None:
        self.cls = cls
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, obj: None, owner: type | None = None) -> _Section[T]: ...

    @overload
    def __get__(self, obj: PipelineParams, owner: type | None = None) -> T: ...

    def __get__(self, obj: PipelineParams | None, owner: type | None = None) -> Any:
        if obj is None:
            return self
        return obj.read(self.name, self.cls)


class PipelineParams:
    """Every params.yaml section, typed; see the module docstring."""

    project = _Section(ProjectParams)
    ingest = _Section(IngestParams)
    consensus = _Section(ConsensusParams)
    validate = _Section(ValidateParams)
    split = _Section(SplitParams)
    composition = _Section(CompositionParams)
    train = _Section(TrainParams)
    evaluate = _Section(EvaluateParams)
    validate_report = _Section(ValidateReportParams)
    report = _Section(ReportParams)
    sweep = _Section(SweepParams)
    extract = _Section(ExtractParams)
    analyze = _Section(AnalyzeParams)
    outliers = _Section(OutliersParams)
    hardest = _Section(HardestParams)
    merge = _Section(MergeParams)
    compare = _Section(CompareParams)
    behaviour = _Section(BehaviourParams)
    ablation = _Section(AblationParams)
    demo = _Section(DemoParams)

    def __init__(self, data: dict[str, Any], path: str | Path) -> None:
        self.data = data
        self.path = Path(path)
        self._cache: dict[str, Any] = {}

    @classmethod
    def load(cls, path: str | Path | None = None) -> PipelineParams:
        """Parse params.yaml (``path``, else ``$POSEOPS_PARAMS``, else ./params.yaml) once."""
        return cls(load_params(path), params_path(path))

    def require(self, *names: str) -> None:
        """The sections a command cannot run without: a missing one is an error naming it (a
        deleted ``train:`` section must not train on code defaults and replace the last model)."""
        for name in names:
            if self.data.get(name) is None:
                raise PoseopsError(f"no [{name}] section: this command reads it (restore it from "
                                   "the shipped params.yaml; an empty mapping takes the defaults)",
                                   file=self.path)

    def read(self, name: str, cls: type[T]) -> T:
        """Section ``name`` validated into ``cls`` (defaults when the section is absent)."""
        if name not in self._cache:
            raw = self.data.get(name)
            self._cache[name] = from_dict(cls, {} if raw is None else raw,
                                          where=f"{self.path} [{name}]")
        return self._cache[name]


SECTIONS: dict[str, type] = {name: attr.cls for name, attr in vars(PipelineParams).items()
                             if isinstance(attr, _Section)}
