"""Great Expectations machinery shared by every validation stage (dataset, labeler QC, report).

A suite is a JSON file in ``expectations/`` in GE 1.x's own format, with two poseops conventions:

- ``meta.table`` (required) names the DataFrame an expectation runs on, so one suite covers several
  derived tables (``labels``, ``frames``, ``bodypart_stats``, ``metrics``, ...). Optional meta:
  ``name`` (a short human name used in messages), ``id_columns`` (columns that identify an
  offending row; default image/bodypart/scorer where present, else the table's first column),
  ``enabled_by`` (a dotted parameter path: the expectation is skipped when it is false) and
  ``optional: true`` (skipped, not an error, when its table is not given), ``skip_if_table`` (a table
  name: the expectation is skipped when that table IS given, e.g. a per-bodypart rule that a
  multi-animal table checks per individual instead) and ``hint`` (what to do, appended to the
  failure message).
- Any value may be a placeholder ``{"$param": "validate.max_nan_share"}``: a dotted path into the
  parameter mapping given at run time (params.yaml's sections plus run-time facts such as
  ``config.bodyparts``). ``{"$param": "a.b", "default": 3}`` falls back to the default when the
  path is absent; without a default a missing path is an error naming the expectation.
- A bound of ``expect_column_values_to_be_between`` may resolve to a mapping ``{default: v,
  <value>: v}`` (``validate.max_nan_share: {default: 0.25, Tongue: 0.8, pup7: 1.0}``): each row
  gets the largest value whose key is one of its id-column values (bodypart, individual), else
  ``default``; the check then runs on a per-row bound column (``<column>_max`` / ``_min``).

A failed range check names its worst rows first, the observed maximum/minimum and the parameter
value that would pass (``passes with validate.max_nan_share: 1.0``).

GE silently drops an expectation it cannot build (unknown type, bad kwargs), so loading checks every
expectation and fails loudly naming the culprit. ``great_expectations`` is imported lazily (5-7 s).
"""

from __future__ import annotations

import copy
import json
import logging
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from poseops.core.errors import PoseopsError
from poseops.core.fileio import write_json
from poseops.quality.bounds import (
    DEFAULT_ID_COLUMNS,
    has_mapping_bound,
    param_paths,
    per_row_bound,
)
from poseops.quality.bounds import explain as _explain

log = logging.getLogger(__name__)

PARAM_KEY = "$param"
DOCS_SITE = "poseops_site"  # the ephemeral context already owns "local_site"
N_EXAMPLES = 3
RESULT_COLUMNS = [
    "name",
    "expectation",
    "table",
    "success",
    "observed",
    "unexpected_count",
    "element_count",
    "examples",
    "kwargs",
    "hint",
]


@dataclass
class ValidationResult:
    """The outcome of one suite over a set of tables.

    ``results``: one row per expectation with columns ``name, expectation, table, success
    (True/False, None when skipped), observed (str), unexpected_count, element_count, examples
    (list of dicts: id columns + offending value), kwargs (dict, placeholders filled), hint``.
    """

    suite: str
    results: pd.DataFrame
    ge_results: list[dict[str, Any]] = field(default_factory=list)
    docs_index: Path | None = None

    @property
    def success(self) -> bool:
        return bool(self.failures().empty)

    def failures(self) -> pd.DataFrame:
        return self.results[self.results["success"].eq(False)]

    def message(self) -> str:
        """One line naming every failed expectation, its observed value and example rows."""
        fails = self.failures()
        if fails.empty:
            return f"all {int(self.results['success'].eq(True).sum())} expectations passed"
        parts = [_describe_failure(row) for row in fails.itertuples(index=False)]
        return f"{len(fails)} expectation(s) failed: " + " | ".join(parts)

    def to_json_dict(self) -> dict[str, Any]:
        ok = self.results["success"]
        return {
            "suite": self.suite,
            "success": self.success,
            "statistics": {
                "evaluated": int(ok.notna().sum()),
                "successful": int(ok.eq(True).sum()),
                "failed": int(ok.eq(False).sum()),
                "skipped": int(ok.isna().sum()),
            },
            "results": self.results.astype(object)
            .where(self.results.notna(), None)
            .to_dict(orient="records"),
            "data_docs": str(self.docs_index) if self.docs_index else None,
            "great_expectations": self.ge_results,
        }

    def save(self, path: str | Path) -> Path:
        return write_json(self.to_json_dict(), path)

    def check(self, fail_on_error: bool = True) -> None:
        """Raise a PoseopsError on any failure (or only log a warning when ``fail_on_error`` is off)."""
        if self.success:
            log.info("%s: %s", self.suite, self.message())
            return
        if fail_on_error:
            raise PoseopsError(self.message(), file=self.suite)
        log.warning("%s: %s (fail_on_error is off: continuing)", self.suite, self.message())


def _describe_failure(row: Any) -> str:
    text = f"{row.name} ({row.expectation} on {row.table}): observed {row.observed}"
    examples = row.examples or []
    if examples:
        shown = "; ".join(" ".join(f"{k}={v}" for k, v in ex.items()) for ex in examples)
        text += f"; e.g. {shown}"
    if row.hint:
        text += f" ({row.hint})"
    return text


# ---------------------------------------------------------------------------- suite JSON
def read_suite_json(path: str | Path) -> dict[str, Any]:
    """Read a suite file and check the poseops conventions (every expectation has meta.table)."""
    path = Path(path)
    if not path.exists():
        raise PoseopsError("expectation suite not found", file=path)
    try:
        spec = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise PoseopsError(f"not valid JSON: {e}", file=path) from e
    exps = spec.get("expectations") if isinstance(spec, dict) else None
    if not isinstance(exps, list) or not exps:
        raise PoseopsError("suite has no 'expectations' list", file=path)
    for i, exp in enumerate(exps):
        if not isinstance(exp, dict) or "type" not in exp:
            raise PoseopsError(f"expectation #{i} has no 'type'", file=path)
        if not (exp.get("meta") or {}).get("table"):
            raise PoseopsError(
                f"expectation #{i} ({exp['type']}) has no meta.table naming the table it checks",
                file=path,
            )
    spec.setdefault("name", path.stem)
    return spec


def expectation_name(exp: Mapping[str, Any]) -> str:
    meta = exp.get("meta") or {}
    if meta.get("name"):
        return str(meta["name"])
    kw = exp.get("kwargs") or {}
    target = kw.get("column") or "+".join(kw.get("column_list") or []) or meta.get("table", "")
    return f"{exp['type']}[{target}]"


def lookup(params: Mapping[str, Any], dotted: str) -> Any:
    """``lookup({"a": {"b": 1}}, "a.b") == 1``; KeyError when absent."""
    node: Any = params
    for key in dotted.split("."):
        if not isinstance(node, Mapping) or key not in node:
            raise KeyError(dotted)
        node = node[key]
    return node


def resolve_params(obj: Any, params: Mapping[str, Any], where: str = "suite") -> Any:
    """Replace every ``{"$param": "a.b"[, "default": v]}`` in ``obj`` by its value in ``params``."""
    if isinstance(obj, dict):
        if PARAM_KEY in obj:
            extra = set(obj) - {PARAM_KEY, "default"}
            if extra:
                raise PoseopsError(f"{where}: placeholder has unknown key(s) {sorted(extra)}")
            try:
                return copy.deepcopy(lookup(params, obj[PARAM_KEY]))
            except KeyError:
                if "default" in obj:
                    return obj["default"]
                raise PoseopsError(
                    f"{where}: parameter {obj[PARAM_KEY]!r} is not set (add it to params.yaml)"
                ) from None
        return {k: resolve_params(v, params, where) for k, v in obj.items()}
    if isinstance(obj, list):
        return [resolve_params(v, params, where) for v in obj]
    return obj


def _is_enabled(exp: Mapping[str, Any], params: Mapping[str, Any], where: str) -> bool:
    flag = (exp.get("meta") or {}).get("enabled_by")
    if not flag:
        return True
    try:
        return bool(lookup(params, flag))
    except KeyError:
        raise PoseopsError(f"{where}: enabled_by parameter {flag!r} is not set") from None


def build_suite(name: str, expectations: list[dict[str, Any]], source: str | Path) -> Any:
    """A ``gx.ExpectationSuite`` holding exactly ``expectations``, or a PoseopsError naming each one
    GE could not build (GE itself would drop them with only a log line)."""
    import great_expectations as gx
    from great_expectations.expectations.expectation_configuration import (
        ExpectationConfiguration,
    )

    bad = []
    for exp in expectations:
        try:
            ExpectationConfiguration(
                type=exp["type"], kwargs=exp.get("kwargs") or {}, meta=exp.get("meta")
            ).to_domain_obj()
        except Exception as e:  # GE raises many types: report them all the same way
            reason = (
                " ".join(str(e).split()) or type(e).__name__
            )  # one line: pydantic is multi-line
            bad.append(f"{expectation_name(exp)} ({exp['type']}): {reason}")
    if bad:
        raise PoseopsError(
            f"{len(bad)} expectation(s) did not load: " + "; ".join(bad), file=source
        )
    ge_log = logging.getLogger("great_expectations")
    level = ge_log.level
    ge_log.setLevel(logging.CRITICAL)  # GE logs what it drops; the count is checked below
    try:
        suite = gx.ExpectationSuite(name=name, expectations=copy.deepcopy(expectations))
    finally:
        ge_log.setLevel(level)
    if len(suite.expectations) != len(expectations):
        loaded = {e.expectation_type for e in suite.expectations}
        lost = [expectation_name(e) for e in expectations if e["type"] not in loaded]
        raise PoseopsError(
            f"GE loaded {len(suite.expectations)} of {len(expectations)} expectations; "
            f"dropped: {lost or 'unknown'}",
            file=source,
        )
    return suite


def load_suite(path: str | Path, params: Mapping[str, Any] | None = None) -> Any:
    """Load a suite JSON file into a ``gx.ExpectationSuite`` (placeholders filled from ``params``);
    fails loudly when any expectation does not load."""
    spec = read_suite_json(path)
    exps = [
        resolve_params(e, params or {}, f"{path}: {expectation_name(e)}")
        for e in spec["expectations"]
    ]
    return build_suite(spec["name"], exps, path)


# ---------------------------------------------------------------------------- running
def validate_tables(
    suite_path: str | Path,
    tables: Mapping[str, pd.DataFrame],
    params: Mapping[str, Any] | None = None,
    *,
    docs_dir: str | Path | None = None,
) -> ValidationResult:
    """Run the suite at ``suite_path`` over ``tables`` (table name -> DataFrame).

    Each expectation runs on ``tables[meta.table]``; placeholders are filled from ``params``.
    With ``docs_dir`` a Data Docs HTML site is built there (replacing what was there).
    Returns the tidy results; call ``.check(fail_on_error)`` to stop on failures.
    """
    params = params or {}
    spec = read_suite_json(suite_path)
    suite_name = spec["name"]
    skipped: list[dict[str, Any]] = []
    routed: dict[str, list[dict[str, Any]]] = {}
    for i, raw in enumerate(spec["expectations"]):
        where = f"{suite_path}: {expectation_name(raw)}"
        raw = {**raw, "meta": {**raw["meta"], "poseops_key": i}}
        table = raw["meta"]["table"]
        reason = None
        instead = raw["meta"].get("skip_if_table")
        if not _is_enabled(raw, params, where):
            reason = f"skipped: {raw['meta']['enabled_by']} is off"
        elif instead and instead in tables:
            reason = f"skipped: checked on table {instead!r} instead"
        elif table not in tables:
            if not raw["meta"].get("optional"):
                raise PoseopsError(
                    f"{expectation_name(raw)} runs on table {table!r}, which was not given "
                    f"(tables: {sorted(tables)}); mark it meta.optional to skip it",
                    file=suite_path,
                )
            reason = f"skipped: table {table!r} not given"
        if reason:  # placeholders of skipped expectations need no parameter
            skipped.append(_skipped_row(raw, reason))
            continue
        exp = resolve_params(raw, params, where)
        exp["meta"]["poseops_params"] = param_paths(raw.get("kwargs") or {})
        if has_mapping_bound(exp):
            tables = dict(tables)
            tables[table], exp = per_row_bound(exp, tables[table], where)
        routed.setdefault(table, []).append(exp)

    rows: list[dict[str, Any]] = list(skipped)
    ge_results: list[dict[str, Any]] = []
    if routed:
        context = _context(docs_dir)
        source = context.data_sources.add_pandas("poseops")
        for table, exps in routed.items():
            suite = build_suite(f"{suite_name}.{table}", exps, suite_path)
            res = _run_one(context, source, suite, table, tables[table])
            ge_results.append(res.to_json_dict())
            by_key = {e["meta"]["poseops_key"]: e for e in exps}
            for r in res.results:
                exp = by_key[r.expectation_config.meta["poseops_key"]]
                row = _result_row(exp, r.to_json_dict())
                if row["success"] is False:
                    _explain(row, exp, tables[table])
                rows.append(row)
        docs_index = _build_docs(context, docs_dir) if docs_dir else None
    else:
        docs_index = None
    rows.sort(key=lambda r: r.pop("_key"))
    results = pd.DataFrame(rows, columns=RESULT_COLUMNS)
    return ValidationResult(str(suite_path), results, ge_results, docs_index)


def _context(docs_dir: str | Path | None) -> Any:
    logging.getLogger("great_expectations").setLevel(logging.WARNING)  # its INFO is noise here
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    if docs_dir:
        context.add_data_docs_site(
            DOCS_SITE,
            {
                "class_name": "SiteBuilder",
                "store_backend": {
                    "class_name": "TupleFilesystemStoreBackend",
                    "base_directory": str(_staging_dir(Path(docs_dir).resolve())),  # GE: absolute
                },
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            },
        )
    return context


def _staging_dir(docs_dir: Path) -> Path:
    docs_dir.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{docs_dir.name}.", dir=docs_dir.parent))


def _build_docs(context: Any, docs_dir: str | Path) -> Path:
    """Build the site into its staging folder, then swap it onto ``docs_dir`` (whole or nothing)."""
    docs_dir = Path(docs_dir)
    staging = Path(
        context.get_config().data_docs_sites[DOCS_SITE]["store_backend"]["base_directory"]
    )
    try:
        context.build_data_docs(site_names=[DOCS_SITE])
        if docs_dir.exists():
            old = docs_dir.with_name(f".{docs_dir.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            docs_dir.rename(old)
            shutil.rmtree(old, ignore_errors=True)
        staging.rename(docs_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return docs_dir / "index.html"


def _run_one(context: Any, source: Any, suite: Any, table: str, df: pd.DataFrame) -> Any:
    import great_expectations as gx

    suite = context.suites.add(suite)
    batch = source.add_dataframe_asset(table).add_batch_definition_whole_dataframe(table)
    vd = context.validation_definitions.add(
        gx.ValidationDefinition(name=f"{suite.name}", data=batch, suite=suite)
    )
    ids = [c for c in DEFAULT_ID_COLUMNS if c in df.columns] or list(df.columns[:1])
    extra = {c for e in suite.expectations for c in (e.meta or {}).get("id_columns", [])}
    ids += [c for c in sorted(extra) if c in df.columns and c not in ids]
    log.debug(
        "validating %s (%d rows) with %d expectations", table, len(df), len(suite.expectations)
    )
    return vd.run(
        batch_parameters={"dataframe": df.reset_index(drop=True)},
        result_format={
            "result_format": "SUMMARY",
            "unexpected_index_column_names": ids,
            "partial_unexpected_count": 20,
        },
    )


def _skipped_row(exp: dict[str, Any], reason: str) -> dict[str, Any]:
    return {
        "name": expectation_name(exp),
        "expectation": exp["type"],
        "table": exp["meta"]["table"],
        "success": None,
        "observed": reason,
        "unexpected_count": None,
        "element_count": None,
        "examples": [],
        "kwargs": exp.get("kwargs") or {},
        "hint": exp["meta"].get("hint"),
        "_key": exp["meta"]["poseops_key"],
    }


def _result_row(exp: dict[str, Any], res: dict[str, Any]) -> dict[str, Any]:
    result = res.get("result") or {}
    kwargs = exp.get("kwargs") or {}
    return {
        "name": expectation_name(exp),
        "expectation": exp["type"],
        "table": exp["meta"]["table"],
        "success": bool(res.get("success")),
        "observed": _observed(result, res.get("exception_info")),
        "unexpected_count": result.get("unexpected_count"),
        "element_count": result.get("element_count"),
        "examples": _examples(result, exp),
        "kwargs": kwargs,
        "hint": exp["meta"].get("hint"),
        "_key": exp["meta"]["poseops_key"],
    }


def _observed(result: dict[str, Any], exception_info: Any) -> str:
    error = _exception_message(exception_info)
    if error:
        return f"error: {error}"
    if result.get("observed_value") is not None:
        return _short(result["observed_value"])
    if result.get("element_count") is not None and "unexpected_count" in result:
        n, bad = result["element_count"], result["unexpected_count"]
        pct = 100.0 * bad / n if n else 0.0
        return f"{bad} of {n} rows unexpected ({pct:.1f}%)"
    parts = []
    if result.get("partial_unexpected_list"):
        parts.append(f"unexpected {_short(result['partial_unexpected_list'])}")
    if result.get("partial_missing_list"):
        parts.append(f"missing {_short(result['partial_missing_list'])}")
    if parts:
        return ", ".join(parts)
    return "as expected" if result else "no result (column missing?)"


def _exception_message(info: Any) -> str | None:
    """GE nests exception info (sometimes one dict per metric): find the first message."""
    if isinstance(info, dict):
        if info.get("raised_exception") and info.get("exception_message"):
            return str(info["exception_message"]).splitlines()[0]
        for v in info.values():
            msg = _exception_message(v)
            if msg:
                return msg
    return None


def _short(value: Any, limit: int = 120) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else value
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _examples(result: dict[str, Any], exp: dict[str, Any]) -> list[dict[str, Any]]:
    """Up to N_EXAMPLES offending rows as {id column: value, checked column: value}."""
    rows = result.get("partial_unexpected_index_list") or []
    out = []
    for row in rows[:N_EXAMPLES]:
        if isinstance(row, dict):  # id columns first, then the checked value(s)
            ids = result.get("unexpected_index_column_names") or []
            keys = [k for k in ids if k in row] + [k for k in row if k not in ids]
            out.append({k: _plain(row[k]) for k in keys})
        else:  # no id columns available: GE gives bare index positions
            out.append({"row": _plain(row)})
    if not out and result.get("partial_unexpected_list"):
        out = [{"value": _plain(v)} for v in result["partial_unexpected_list"][:N_EXAMPLES]]
    return out


def _plain(v: Any) -> Any:
    if hasattr(v, "item"):
        return v.item()
    return v
