"""The one place that turns Airflow things (connections, Params) into plain codepairs values.

``include/codepairs`` never imports Airflow; DAG tasks call it through these helpers. This adapter is
a package of its own (installed beside ``codepairs``) rather than a module in ``dags/``, so DAG
files import it the same way under the dag-processor, ``dag.test()``, pytest and docker-compose.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.sdk import Asset, ExceptionRetryPolicy, RetryAction, RetryRule
from codepairs import logs
from codepairs.errors import SourceError, one_line
from codepairs.sources import identity

log = logging.getLogger(__name__)

PIPELINE_DB_CONN_ID = "codepairs_db"
GITHUB_CONN_ID = "github_default"  # the GitHub provider's convention: token in the password, API URL in host
PAIRS_ASSET = Asset("codepairs_pairs", uri="codepairs://pipeline/pairs")
GIT_CONN_PREFIX = "git_"  # git_<host>[_<port>]: login and password for cloning from that host over http(s)

# One repository of the crawl DAG's Param ``repos``: trimmed, and with no credential (see
# ``identity.CREDENTIAL_PATTERN``), so a secret is refused when the run is triggered, before the run
# and its conf exist; Airflow's refusal quotes this schema, description included.
REPO_SPEC_SCHEMA: dict[str, str] = {
    "type": "string",
    "pattern": rf"^(?![\s\S]*({identity.CREDENTIAL_PATTERN}))\S(.*\S)?$",
    "description": "a path, owner/name or clone URL with no credential in it (no user:password@ or token@, "
    "no ?query, no #fragment but #github=owner/name): a private repository's login and password go in the "
    f"Airflow connection {GIT_CONN_PREFIX}<host> (github.com: {GIT_CONN_PREFIX}github_com), never in Params",
}

# The crawl form's "Select repositories": three states, since a checkbox cannot show "as the config says"
# (it showed off while the config's selection was on). Value -> what the form shows.
SELECT_FROM_CONFIG = "config"
SELECT_CHOICES: dict[str, str] = {
    SELECT_FROM_CONFIG: "As the config says (select.enabled)",
    "on": "On: licence and activity checks",
    "off": "Off: keep every repository",
}

# Pools the DAGs name, created at setup (``make up``/``make run``, docker-compose's init): a task
# whose pool does not exist is never scheduled, and ``dag.test()`` does not notice.
GITHUB_POOL = "github_api"
POOLS: dict[str, tuple[int, str]] = {
    GITHUB_POOL: (4, "Repositories crawled on GitHub at once: caps concurrent API calls under one token"),
}

# Retrying cannot fix data a gate refused, nor a configuration error: fail those at once.
NO_RETRY_ON_BAD_DATA = ExceptionRetryPolicy(
    rules=[
        RetryRule(
            exception="codepairs.errors.GateFailedError",
            action=RetryAction.FAIL,
            reason="a data-quality gate refused the data; fix the data, then clear the task",
        ),
        RetryRule(
            exception="codepairs.errors.ConfigError", action=RetryAction.FAIL, reason="bad configuration or parameters"
        ),
        RetryRule(
            exception="codepairs.errors.GithubError",
            action=RetryAction.FAIL,
            reason="GitHub kept failing after the client's retries; the next run resumes from the cursors",
        ),
    ]
)


def worker_hostname() -> str:
    """``[core] hostname_callable`` for several Celery workers on one machine: the worker's name
    (``CODEPAIRS_WORKER_NAME``, set per worker) before the machine's, so each task instance records
    which worker ran it."""
    import os
    import socket

    name = os.environ.get("CODEPAIRS_WORKER_NAME")
    return f"{name}@{socket.getfqdn()}" if name else socket.getfqdn()


def say_why_it_failed(context: Any) -> None:
    """``on_failure_callback``: Airflow calls it only once a task has failed for good (no retry left, or
    the retry policy refused one), in the task's own process, so this is the last line of its log: the
    task and the reason in one line, for whoever opens the red square."""
    ti = context["ti"]
    where = f"{ti.task_id}[{ti.map_index}]" if getattr(ti, "map_index", -1) >= 0 else ti.task_id
    log.error("codepairs: %s failed for good: %s", where, one_line(context.get("exception")))


def quiet_task_logs(context: Any) -> None:
    """``on_execute_callback``: runs in the task's own process before its body, so GX's import chatter
    and the embedded Postgres' and Alembic's lines stay out of the task log (the CLI quiets the same
    loggers, ``codepairs.logs``)."""
    logs.quiet_libraries()


DEFAULT_ARGS: dict[str, Any] = {
    "owner": "codepairs",
    "retries": 3,
    "retry_delay": timedelta(seconds=30),
    "retry_exponential_backoff": 2.0,
    "max_retry_delay": timedelta(minutes=30),
    "retry_policy": NO_RETRY_ON_BAD_DATA,
    "on_execute_callback": quiet_task_logs,
    "on_failure_callback": say_why_it_failed,
}


# What both DAGs share: start date, no catchup, one run at a time, owner and retries. Whether each
# starts paused is its own (the crawl does, until the user's first trigger; see docs/operations.md).
COMMON_DAG_ARGS: dict[str, Any] = {
    "start_date": datetime(2026, 1, 1, tzinfo=UTC),
    "catchup": False,
    "max_active_runs": 1,
    "default_args": DEFAULT_ARGS,
}


MAP_LABEL = "{{ repo_label }}"  # every mapped task's map_index_template: its shard's repositories


def label_map_index(repositories: list[str] | list[dict[str, Any]]) -> None:
    """Show this mapped instance in the grid and the API by its shard's repositories (the first, and
    how many more) instead of 0, 1, …: sets the context key ``MAP_LABEL`` renders, before the task's
    body runs (a template that errors would fail a task whose body succeeded). The values are
    credential-free: ``list_repositories`` removed every credential, and a source never carries one."""
    from airflow.sdk import get_current_context

    names = [r["source"] if isinstance(r, dict) else r for r in repositories]  # a chain state: its source
    more = f" (+{len(names) - 1})" if len(names) > 1 else ""
    get_current_context()["repo_label"] = (names[0] + more) if names else "(no repository)"


SHARD_LABEL = "{{ shard_label }}"  # the build's mapped tasks: their shard of the pair-id keyspace


def label_shard(shard: dict[str, int]) -> None:
    """Show the build's mapped instance as its shard (``shard 3/8``) instead of its map index; set before
    the task's body runs, like ``label_map_index``."""
    from airflow.sdk import get_current_context
    from codepairs.shards import Shard

    get_current_context()["shard_label"] = Shard.from_dict(shard).label()


def refuse_unknown_conf() -> None:
    """Fail at once (ConfigError: no retry) on a run whose conf names a key that is not a Param of its
    DAG, listing the allowed keys: a misspelt ``{"repo": …}`` would otherwise crawl the config's list."""
    from airflow.sdk import get_current_context
    from codepairs.outcome import check_conf_keys

    context = get_current_context()
    check_conf_keys(context["dag_run"].conf, context["dag"].params.keys())


def chain_results(value: Any) -> list[dict[str, Any]]:
    """The repository chains' results as one list of state dicts. A mapped task group hands its
    consumer one list per shard, but a single shard's bare list on 3.3.2 (apache/airflow#69036), and
    nothing when no chain ran."""
    from collections.abc import Mapping, Sequence

    if not value:
        return []
    shards = list(value)
    if all(isinstance(item, Mapping) for item in shards):  # the bare value of a single expansion
        return [dict(item) for item in shards]
    return [dict(state) for shard in shards if isinstance(shard, Sequence) for state in shard]


def failed_tasks() -> list[str]:
    """Each task of this run that failed, a mapped one as ``task[map index] (its repositories)`` from
    ``list_repositories``' shards, one entry per repository chain, from the states Airflow recorded."""
    from airflow.sdk import get_current_context

    ti = get_current_context()["ti"]
    states = ti.get_task_states(dag_id=ti.dag_id, run_ids=[ti.run_id]).get(ti.run_id, {})
    shards = ti.xcom_pull(task_ids="list_repositories") or []
    failed: dict[str, str] = {}
    for key, state in sorted(states.items()):
        if state != "failed" or key == ti.task_id:
            continue
        task_id, _, index = key.rpartition("_")
        if not (index.isdigit() and task_id):  # not mapped
            failed.setdefault(key, key)
            continue
        shard = shards[int(index)] if int(index) < len(shards) else []
        failed.setdefault(f"chain {index}", f"{task_id}[{index}] ({', '.join(shard) or '?'})")
    return list(failed.values())


def pipeline_database_url() -> str | None:
    """The Airflow connection ``codepairs_db`` if defined; None lets the library use its default.

    Built from the connection's fields rather than ``get_uri()``, so a Unix-socket host (the
    embedded server's folder) survives the round trip.
    """
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException
    from sqlalchemy.engine import URL

    try:
        conn = BaseHook.get_connection(PIPELINE_DB_CONN_ID)
    except AirflowNotFoundException:  # no connection defined: the library's default applies
        return None
    socket_dir = conn.host if conn.host and conn.host.startswith("/") else None
    url = URL.create(
        "postgresql+psycopg",
        username=conn.login or None,
        password=conn.password or None,
        host=None if socket_dir else conn.host or None,
        port=conn.port or None,
        database=conn.schema or None,
        query={"host": socket_dir} if socket_dir else {},
    )
    return url.render_as_string(hide_password=False)


def engine():
    from codepairs import store

    return store.get_engine(pipeline_database_url())


def pipeline_config(params: dict[str, Any]):
    """The YAML config with this run's trigger-form Params applied on top."""
    from codepairs.config import load_config

    config = load_config()
    crawl = {k: params[k] for k in ("max_commits", "batch_size") if params.get(k) is not None}
    if crawl:
        config = dataclasses.replace(config, crawl=dataclasses.replace(config.crawl, **crawl))
    if params.get("select") in ("on", "off"):  # "config" (or no value) keeps select.enabled
        enabled = params["select"] == "on"
        config = dataclasses.replace(config, select=dataclasses.replace(config.select, enabled=enabled))
    score = {k: params[k] for k in ("min_score", "top_fraction") if params.get(k) is not None}
    if score:
        config = dataclasses.replace(config, score=dataclasses.replace(config.score, **score))
    balance = {k: params[k] for k in ("total", "shares", "max_synthetic_share") if params.get(k) is not None}
    if "total" in balance or "shares" in balance:  # targets asked for in the form: balance to them
        balance["enabled"] = True
    if balance:  # BalanceConfig checks the values again (the categories, shares not all 0)
        config = dataclasses.replace(config, balance=dataclasses.replace(config.balance, **balance))
    return config


def ensure_pools() -> None:
    """Create every pool the DAGs use that does not exist yet (an operator's resize is kept); run where
    Airflow's metadata database is reachable."""
    from airflow.models.pool import Pool

    for name, (slots, description) in POOLS.items():
        if Pool.get_pool(name) is None:
            Pool.create_or_update_pool(name=name, slots=slots, description=description, include_deferred=False)


def github_credentials() -> tuple[str | None, str | None]:
    """(token, API URL) from the connection ``github_default``; (None, None) leaves the library's
    defaults (``GITHUB_TOKEN``, ``CODEPAIRS_GITHUB_API_URL``, the config)."""
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        conn = BaseHook.get_connection(GITHUB_CONN_ID)
    except AirflowNotFoundException:
        return None, None
    host = conn.host or None
    if host and not host.startswith(("http://", "https://")):
        host = f"https://{host}"
    return conn.password or None, host


def github_step(state: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """The GitHub crawl of one repository; a rate-limit wait too long to sleep through reschedules
    the task for the reset instead of holding its worker slot (it resumes from the stored cursors)."""
    from airflow.sdk.exceptions import AirflowRescheduleException
    from codepairs import pipeline
    from codepairs.errors import GithubError, RateLimitWait

    token, api_url = github_credentials()
    try:
        return pipeline.github_step(engine(), state, pipeline_config(params), token, api_url)
    except RateLimitWait as wait:
        log.warning("%s; rescheduling at %s", wait, wait.resume_at.isoformat(timespec="seconds"))
        raise AirflowRescheduleException(wait.resume_at) from None
    except GithubError as err:
        if err.status is None:  # GitHub unreachable: the task fails and Airflow retries it, with backoff
            raise ConnectionError(str(err)) from None
        # An HTTP error after the client's own retries: the git side goes on, the chain fails at its end.
        log.error("GitHub crawl of %s failed: %s", state.get("name"), err)
        return {**state, "github_error": str(err)}


def git_connection_ids(url: str) -> list[str]:
    """The Airflow connections that may hold the credential for a clone URL's host, most specific
    first: ``git_<host>_<port>``, then ``git_<host>``, lower case, every run of other characters one
    ``_`` (``https://git.example.com:8443/x.git``: ``git_git_example_com_8443``, then
    ``git_git_example_com``), so the id is also a valid ``AIRFLOW_CONN_*`` variable name."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if not parts.hostname:
        return []
    try:
        port = parts.port
    except ValueError:  # not a number: no port-specific connection
        port = None
    keys = [f"{parts.hostname}_{port}"] if port else []
    return [GIT_CONN_PREFIX + re.sub(r"[^a-z0-9]+", "_", key.lower()).strip("_") for key in [*keys, parts.hostname]]


def git_auth(spec: str) -> str | None:
    """The HTTP Basic credential (``login:password``) for cloning a repository over http(s), from its
    connection ``git_<host>`` (an ``AIRFLOW_CONN_*`` variable, the metadata database or a secrets
    backend); None when it is not an http(s) repository or no connection is defined. It goes to git
    through the environment only; Airflow masks a connection's password in every log."""
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        clone_url = identity.resolve_source(spec).clone_url
    except SourceError:  # the crawl records why it cannot be read
        return None
    if not clone_url.lower().startswith(("http://", "https://")):
        return None
    for conn_id in git_connection_ids(clone_url):
        try:
            conn = BaseHook.get_connection(conn_id)
        except AirflowNotFoundException:
            continue
        return base64.b64encode(f"{conn.login or ''}:{conn.password or ''}".encode()).decode()
    return None


def _connection_hint(spec: str) -> str:
    ids = git_connection_ids(identity.redact(spec))
    return ids[0] if ids else f"{GIT_CONN_PREFIX}<host>"


def without_credentials(specs: list[str]) -> list[str]:
    """``list_repositories``' door: every repository as ``identity.redact`` spells it, so no secret
    reaches XCom, a map label or a log. The trigger form already refused a credential (its schema);
    one that still arrives (the config's list) is removed with a warning naming the connection that
    should hold it, rather than failing the whole run for it: the others are crawled, and this one is
    too when the connection exists."""
    clean = []
    for spec in specs:
        safe = identity.redact(spec)
        if identity.carries_credential(spec):
            log.warning(
                "%s: its credential was removed (Airflow carries none in Params, XCom or logs); "
                "a private repository's login and password go in the Airflow connection %s",
                safe,
                _connection_hint(spec),
            )
        clean.append(safe)
    return clean


def connections_from_urls(specs: list[str]) -> tuple[list[str], dict[str, str], list[str]]:
    """``make run REPOS=...``'s door, before anything reaches Airflow: (the repositories without their
    credentials, ``AIRFLOW_CONN_GIT_*`` variables holding each http(s) URL's login and password for
    this process only, one credential-free note per URL changed). A credential git cannot use
    unattended (an ssh or git:// password, a token in a query string or fragment) is only removed."""
    from urllib.parse import unquote, urlsplit

    clean, env, notes = [], {}, []
    for spec in specs:
        safe = identity.redact(spec)
        clean.append(safe)
        if not identity.carries_credential(spec):
            continue
        parts = urlsplit(spec.strip().partition("#github=")[0])
        conn_id = _connection_hint(spec)
        if parts.scheme in ("http", "https") and parts.username is not None:
            login, password = unquote(parts.username), unquote(parts.password or "")
            env[f"AIRFLOW_CONN_{conn_id.upper()}"] = json.dumps(
                {"conn_type": "generic", "login": login, "password": password}
            )
            notes.append(f"{safe}: its credential goes to git through the connection {conn_id}, for this run only")
        else:
            notes.append(
                f"{safe}: a credential git cannot use unattended was removed (ssh: keys or the agent; "
                f"http(s): login and password in the Airflow connection {conn_id})"
            )
    return clean, env, notes
