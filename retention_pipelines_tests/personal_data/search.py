"""Searching what the platform leaves outside the warehouse for customer ids: files, the
Dagster instance's runs and events, and everything MLflow holds.

Customer ids have one shape (``CUSTOMER_ID_PATTERN``: four digits, a dash, five capitals), so
a search scans text once for that shape and keeps what is in the set of ids looked for: one
regular expression over every byte, whatever the number of customers.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
from dagster._serdes import serialize_value
from mlflow import MlflowClient
from mlflow.artifacts import download_artifacts

from retention_pipelines.core.schemas import CUSTOMER_ID_PATTERN

ID_SHAPE = re.compile(CUSTOMER_ID_PATTERN.removeprefix("^").removesuffix("$").encode())


@dataclass
class Search:
    """What a search found (where: a file, a run, an artefact -> the ids there), and every
    place it looked, so a test can tell an empty finding from a search of nothing."""

    found: dict[str, set[str]] = field(default_factory=dict)
    searched: list[str] = field(default_factory=list)

    def look(self, where: str, data: bytes | str, ids: set[str]) -> None:
        self.searched.append(where)
        hits = ids_in(data, ids)
        if hits:
            self.found.setdefault(where, set()).update(hits)


def ids_in(data: bytes | str, ids: set[str]) -> set[str]:
    """The ids of ``ids`` that occur in ``data``."""
    raw = data.encode("utf-8", "surrogateescape") if isinstance(data, str) else data
    return {found.decode() for found in ID_SHAPE.findall(raw)} & ids


def files_under(root: Path, excluded: Iterable[Path] = ()) -> Iterator[Path]:
    """Every regular file under ``root``, except under the ``excluded`` folders."""
    skipped = [path.resolve() for path in excluded]
    for path in sorted(root.rglob("*")):
        resolved = path.resolve()
        if path.is_file() and not any(resolved.is_relative_to(folder) for folder in skipped):
            yield path


def ids_in_files(root: Path, ids: set[str], excluded: Iterable[Path] = ()) -> Search:
    """Per file under ``root`` (but not under ``excluded``), the ids it holds, read as bytes
    (a binary file's text, a SQLite file's rows, a pickle's strings are all found)."""
    search = Search()
    for path in files_under(root, excluded):
        search.look(str(path.relative_to(root)), path.read_bytes(), ids)
    return search


def ids_in_dagster(instance: dg.DagsterInstance, ids: set[str]) -> Search:
    """Per run of ``instance``, the ids in the run (its config and tags) and in any of its
    events, serialized whole: log messages, asset metadata, check results, observations."""
    search = Search()
    for run in instance.get_runs():
        where = f"run {run.run_id} ({run.job_name})"
        search.look(where, serialize_value(run), ids)
        for event in instance.all_logs(run.run_id):
            search.look(where, serialize_value(event), ids)
    return search


def ids_in_mlflow(client: MlflowClient, ids: set[str]) -> Search:
    """Per MLflow object, the ids in it: every run's params, tags, metric names and
    artefacts (downloaded), every logged model's params, tags and artefacts, every registered
    model and version (descriptions, tags, aliases, and the artefacts of its source)."""
    search = Search()
    experiments = client.search_experiments()
    with tempfile.TemporaryDirectory() as folder:
        downloads = Path(folder)
        for experiment in experiments:
            search.look(f"experiment {experiment.name}", repr(experiment.tags), ids)
            for run in client.search_runs([experiment.experiment_id]):
                where = f"run {run.info.run_id}"
                data = run.data
                search.look(where, repr((data.params, data.tags, sorted(data.metrics))), ids)
                _look_at_artefacts(search, where, run.info.artifact_uri, downloads, ids)
        experiment_ids = [experiment.experiment_id for experiment in experiments]
        for model in client.search_logged_models(experiment_ids) if experiment_ids else []:
            where = f"logged model {model.model_id}"
            search.look(where, repr((model.params, model.tags, model.name)), ids)
            _look_at_artefacts(search, where, model.artifact_location, downloads, ids)
        for registered in client.search_registered_models():
            where = f"registered model {registered.name}"
            search.look(where, repr((registered.description, registered.tags)), ids)
            for version in client.search_model_versions(f"name = '{registered.name}'"):
                where = f"{registered.name} v{version.version}"
                text = repr((version.description, version.tags, version.aliases, version.source))
                search.look(where, text, ids)
                uri = f"models:/{registered.name}/{version.version}"
                _look_at_artefacts(search, where, uri, downloads, ids)
    return search


def _look_at_artefacts(
    search: Search, where: str, uri: str, downloads: Path, ids: set[str]
) -> None:
    target = Path(tempfile.mkdtemp(dir=downloads))
    fetched = Path(download_artifacts(artifact_uri=uri, dst_path=str(target)))
    for path in files_under(fetched):
        search.look(f"{where}: {path.relative_to(fetched).as_posix()}", path.read_bytes(), ids)
