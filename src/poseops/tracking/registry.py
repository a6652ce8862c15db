"""The MLflow Model Registry's aliases: who holds ``@champion`` and moving it.

``poseops compare`` moves the alias to the candidate's model version when the backward-
compatibility gate passes (:func:`move_alias`); ``poseops sweep --promote`` reuses it. A version is
found from its training run id (:func:`versions_of_run`). ``mlflow`` is imported lazily.
"""

from __future__ import annotations

import logging
from typing import Any

from poseops.core.errors import PoseopsError
from poseops.tracking.runs import quiet_env, tracking_uri

log = logging.getLogger(__name__)

CHAMPION = "champion"


def _client(uri: str | None) -> Any:
    from mlflow import MlflowClient

    quiet_env()
    u = tracking_uri(uri)
    return MlflowClient(tracking_uri=u, registry_uri=u)


def alias_holder(uri: str | None, model_name: str, alias: str = CHAMPION) -> str | None:
    """The version (as a string) that ``model_name@alias`` points at; None when the alias (or the
    registered model) does not exist."""
    from mlflow.exceptions import MlflowException

    try:
        return str(_client(uri).get_model_version_by_alias(model_name, alias).version)
    except MlflowException:
        return None


def versions_of_run(uri: str | None, run_id: str) -> list[tuple[str, str]]:
    """(registered model name, version) of every model version created from ``run_id``, newest
    version first."""
    found = _client(uri).search_model_versions(f"run_id = '{run_id}'")
    return sorted(((str(v.name), str(v.version)) for v in found), key=lambda nv: -int(nv[1]))


def move_alias(uri: str | None, model_name: str, version: str | int,
               alias: str = CHAMPION) -> str | None:
    """Point ``model_name@alias`` at ``version`` (MLflow moves an alias atomically: one version
    holds it). Returns the version that held it before (None: nobody). A version that does not
    exist is a PoseopsError naming it."""
    from mlflow.exceptions import MlflowException

    client = _client(uri)
    try:
        client.get_model_version(model_name, str(version))
    except MlflowException as e:
        raise PoseopsError(f"registered model {model_name!r} has no version {version}: cannot move"
                           f" @{alias}") from e
    before = alias_holder(uri, model_name, alias)
    client.set_registered_model_alias(model_name, alias, str(version))
    log.info("registry: %s@%s -> version %s (was %s)", model_name, alias, version, before)
    return before
