"""GX Data Docs of the gates' results: the static HTML site GX users expect to open, kept with the data.

The gates validate in an ephemeral GX context (no files, nothing shared between the mapped tasks that
gate at once) and store every result in ``gate_results``. This module turns those results into the
Data Docs of a GX *file* context under the data folder (``settings.data_docs_dir()``, by default
``<data dir>/gx``: ``great_expectations.yml``, ``expectations/``, ``uncommitted/validations/`` and the
site in ``uncommitted/data_docs/local_site/``), so the database stays the one record and the site is
a view that can always be made again from it:

- ``after_gate`` (called by ``gates.check`` once a result is stored) adds that result to the file
  context's validation-results store, its suite (rebuilt from the result's expectations) to the
  expectations store, renders their pages and the index (what GX's ``UpdateDataDocsAction`` does at
  the end of a checkpoint), drops the suite's results beyond ``KEEP_PER_SUITE``, and logs where the
  page is. A checkpoint is not used: it would run the validation again inside the file context,
  whose data-source YAML every concurrent gate task would rewrite. A site that cannot be built is a
  warning, never a failed gate: the site is documentation, the gate's verdict is in Postgres.
- ``rebuild`` (``codepairs datadocs``) makes the whole site again from ``gate_results``: the latest
  ``keep`` results of each suite, into a fresh folder swapped in whole.

Each page's path is fixed by its ``gate_results`` row (suite, run id, time, ``gate-<id>``), so the
dashboard finds the page of any stored result (``page_path``). Writers take an exclusive ``flock``
on ``<site root>.lock``: gate tasks on several workers (sharing the data folder) add results at once.
GX's index page draws its table with scripts from public CDNs, so offline it shows no rows; each
validation page is plain HTML and the dashboard links every gate run's page directly.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import shutil
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from codepairs import settings

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

log = logging.getLogger(__name__)

SITE = "local_site"  # GX's default site name: where GX users look
SITE_DIR = Path("uncommitted") / "data_docs" / SITE
KEEP_PER_SUITE = 200  # results kept per suite in the site (every one stays in gate_results)
SITE_CONFIG: dict[str, Any] = {
    "class_name": "SiteBuilder",
    "show_how_to_buttons": False,  # GX's "how to" buttons and newsletter footer are not for this team
    "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": f"{SITE_DIR}/"},
    "site_index_builder": {"class_name": "DefaultSiteIndexBuilder", "validation_results_limit": KEEP_PER_SUITE * 20},
}
GATE_RESULTS = """
SELECT id, suite, run_id, success, created_at, result FROM (
  SELECT *, row_number() OVER (PARTITION BY suite ORDER BY created_at DESC, id DESC) AS n FROM gate_results
) AS r WHERE n <= :keep ORDER BY id
"""
GATE_RESULT = "SELECT id, suite, run_id, created_at FROM gate_results WHERE id = :id"


@dataclass(frozen=True)
class StoredResult:
    """One ``gate_results`` row, as the site needs it."""

    result_id: int
    suite: str
    run_id: str | None
    created_at: datetime
    result: Mapping[str, Any]


def site_root(root: Path | None = None) -> Path:
    return (root or settings.data_docs_dir()).resolve()


def index_path(root: Path | None = None) -> Path:
    return site_root(root) / SITE_DIR / "index.html"


def _part(text: str | None) -> str:
    """One path component of a page: GX's filesystem store turns the key's parts into folders."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", text or "no-run") or "no-run"


def _run_time(created_at: datetime) -> datetime:
    return created_at.astimezone(UTC) if created_at.tzinfo else created_at.replace(tzinfo=UTC)


def page_path(suite: str, run_id: str | None, created_at: datetime, result_id: int) -> Path:
    """The page of one stored result, relative to the site's folder (the layout GX's store writes)."""
    stamp = _run_time(created_at).strftime("%Y%m%dT%H%M%S.%fZ")
    return Path("validations") / _part(suite) / _part(run_id) / stamp / f"gate-{result_id}.html"


def page_of(engine: Engine, result_id: int) -> Path | None:
    """The page of ``gate_results`` row ``result_id``, relative to the site's folder (None: no such row)."""
    with engine.connect() as conn:
        row = conn.execute(sa.text(GATE_RESULT), {"id": result_id}).mappings().first()
    return None if row is None else page_path(row["suite"], row["run_id"], row["created_at"], row["id"])


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / f"{root.name}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _context(root: Path) -> Any:
    """The file context at ``root`` (made on first use), its one site configured as ``SITE_CONFIG``."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="file", context_root_dir=str(root))
    if context.list_data_docs_sites() != {SITE: SITE_CONFIG}:
        for name in list(context.list_data_docs_sites()):
            context.delete_data_docs_site(name)
        context.add_data_docs_site(SITE, SITE_CONFIG)
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    return context


def _identifiers(stored: StoredResult) -> tuple[Any, Any]:
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.resource_identifiers import (
        ExpectationSuiteIdentifier,
        ValidationResultIdentifier,
    )

    suite = ExpectationSuiteIdentifier(name=stored.suite)
    run = RunIdentifier(run_name=_part(stored.run_id), run_time=_run_time(stored.created_at))
    return suite, ValidationResultIdentifier(suite, run, f"gate-{stored.result_id}")


def _add(context: Any, stored: StoredResult) -> tuple[Any, Any]:
    """Put one stored result, and its suite, in the context's stores; return their identifiers."""
    import great_expectations as gx
    from great_expectations.core.expectation_validation_result import ExpectationSuiteValidationResultSchema
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

    raw = json.loads(json.dumps(stored.result, default=str))
    results = raw.get("results", [])
    passed = sum(1 for r in results if r.get("success"))
    # gates merge the state's results into the frame's: the statistics must count both
    raw["statistics"] = {
        "evaluated_expectations": len(results),
        "successful_expectations": passed,
        "unsuccessful_expectations": len(results) - passed,
        "success_percent": 100.0 * passed / len(results) if results else None,
    }
    raw["suite_name"] = stored.suite
    meta = raw.setdefault("meta", {})
    meta["run_id"] = {"run_name": _part(stored.run_id), "run_time": _run_time(stored.created_at).isoformat()}
    meta.setdefault("active_batch_definition", {})["data_asset_name"] = stored.suite
    validation = ExpectationSuiteValidationResultSchema().load(raw)
    suite_id, result_id = _identifiers(stored)
    context.validation_results_store.set(result_id, validation)
    suite = gx.ExpectationSuite(name=stored.suite)
    for r in results:
        cfg = r["expectation_config"]
        kwargs = {k: v for k, v in cfg.get("kwargs", {}).items() if k != "batch_id"}
        suite.add_expectation_configuration(ExpectationConfiguration(type=cfg["type"], kwargs=kwargs))
    context.expectations_store.add_or_update(key=suite_id, value=suite)
    return suite_id, result_id


def _prune(context: Any, root: Path, suite: str, keep: int) -> None:
    """Drop the suite's oldest results, and their pages, beyond ``keep``."""
    store = context.validation_results_store
    keys = [k for k in store.list_keys() if k.expectation_suite_identifier.name == suite]
    keys.sort(key=lambda k: (k.run_id.run_time, k.batch_identifier))
    for key in keys[: max(0, len(keys) - keep)]:
        store.remove_key(key)
        run = key.run_id
        stamp = run.run_time.strftime("%Y%m%dT%H%M%S.%fZ")
        page = root / SITE_DIR / "validations" / suite / run.run_name / stamp / f"{key.batch_identifier}.html"
        page.unlink(missing_ok=True)


def publish(stored: StoredResult, root: Path | None = None, keep: int = KEEP_PER_SUITE) -> Path:
    """Add one stored result to the site and render its page, its suite's page and the index; return
    the page's path."""
    root = site_root(root)
    with _locked(root):
        context = _context(root)
        ids = list(_add(context, stored))
        _prune(context, root, stored.suite, keep)
        context.build_data_docs(site_names=[SITE], resource_identifiers=ids)
    return root / SITE_DIR / page_path(stored.suite, stored.run_id, stored.created_at, stored.result_id)


def after_gate(stored: StoredResult) -> Path | None:
    """The hook ``gates.check`` calls once a result is stored: publish it and log where its page is; a
    site that cannot be built is logged as a warning and the gate's verdict stands. Off
    (``settings.data_docs_enabled``) it does nothing: ``rebuild`` makes the site later from the rows."""
    if not settings.data_docs_enabled():
        return None
    try:
        page = publish(stored)
    except Exception as err:  # documentation only: never fail, nor hide, the gate's result
        log.warning("GX Data Docs not updated for gate %s (result %s): %s", stored.suite, stored.result_id, err)
        return None
    verdict = "passed" if stored.result.get("success") else "FAILED"
    log.info(
        "gate %s %s; GX Data Docs page: %s (the dashboard serves it at /codepairs/datadocs/gate/%s)",
        stored.suite,
        verdict,
        page,
        stored.result_id,
    )
    return page


def rebuild(engine: Engine, root: Path | None = None, keep: int = KEEP_PER_SUITE) -> tuple[Path, int]:
    """Make the whole site again from ``gate_results`` (the latest ``keep`` results of each suite) in a
    fresh folder, then swap it in; return the index's path and the number of results."""
    root = site_root(root)
    fresh = root.with_name(f"{root.name}.new-{os.getpid()}")
    shutil.rmtree(fresh, ignore_errors=True)
    count = 0
    with _locked(root):
        try:
            context = _context(fresh)
            with engine.connect() as conn:
                rows = conn.execution_options(stream_results=True, yield_per=100).execute(
                    sa.text(GATE_RESULTS), {"keep": keep}
                )
                for row in rows.mappings():
                    _add(
                        context, StoredResult(row["id"], row["suite"], row["run_id"], row["created_at"], row["result"])
                    )
                    count += 1
            context.build_data_docs(site_names=[SITE])
            old = root.with_name(f"{root.name}.old-{os.getpid()}")
            if root.exists():
                root.rename(old)
            fresh.rename(root)
            shutil.rmtree(old, ignore_errors=True)
        finally:
            shutil.rmtree(fresh, ignore_errors=True)
    return index_path(root), count
