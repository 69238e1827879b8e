"""No credential given in a repository's URL is stored, logged, or carried by Airflow (issue 15, failure 1).

Every spelling that can hold a secret (``https://user:PW@``, ``http://TOKEN@``, ``?access_token=``,
``ssh://git:PW@``, ``git://u:PW@``, ``file://u:PW@localhost``, ``…#github=``) is recognised and
redacted at the door; through Airflow the secret is refused in the trigger form and an http(s) login
and password reach git from the connection ``git_<host>`` instead, never through Params, XCom, map
labels or logs.
"""

from __future__ import annotations

import base64
import http.server
import json
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from codepairs.config import CrawlConfig
from codepairs.errors import SourceError
from codepairs.sources import crawl, identity
from gitrepo import GitRepo
from test_e2e_airflow import airflow_pipeline  # noqa: F401  (the DagBag on this test's database)

SECRET = "s3cr3t-Zq7"

# Each spelling that carries SECRET, with the credential-free spelling it is redacted to.
FORMS = {
    "https user:password": ("https://user:{s}@git.example.com/team/x.git", "https://git.example.com/team/x.git"),
    "http token as user": ("http://{s}@git.example.com/team/x.git", "http://git.example.com/team/x.git"),
    "query token": ("https://git.example.com/team/x.git?access_token={s}", "https://git.example.com/team/x.git"),
    "ssh password": ("ssh://git:{s}@git.example.com/team/x.git", "ssh://git@git.example.com/team/x.git"),
    "git password": ("git://u:{s}@git.example.com/team/x.git", "git://u@git.example.com/team/x.git"),
    "file password": ("file://u:{s}@localhost/srv/x", "file://localhost/srv/x"),
    "url fragment": ("https://git.example.com/team/x.git#{s}", "https://git.example.com/team/x.git"),
    "#github= after a password": (
        "https://u:{s}@git.example.com/team/x.git#github=octo/x",
        "https://git.example.com/team/x.git#github=octo/x",
    ),
    "#github= that is no owner/name": ("/srv/x#github={s}/x?y", "/srv/x#github=(not owner/name)"),
}
CLEAN = [
    "octo/hello-world",
    "https://github.com/octo/hello-world.git",
    "ssh://git@github.com/octo/hello-world",
    "git@github.com:Octo/Hello-World.git",
    "https://git.example.com:8443/team/x.git",
    "file:///srv/x",
    "file://localhost/srv/x",
    "/srv/a#b",
    "/srv/x#github=octo/x",
]


@pytest.mark.parametrize("name", FORMS)
def test_every_credential_form_is_recognised_and_redacted_to_the_same_repository(name: str) -> None:
    given, expected = (f.format(s=SECRET) for f in FORMS[name])
    assert identity.carries_credential(given) is True
    assert identity.redact(given) == expected
    # A #github= that is not owner/name stays refused by the door once redacted: it is still no owner/name.
    assert identity.carries_credential(expected) is name.startswith("#github= that is no")
    assert identity.redact(expected) == expected
    try:
        repo = identity.resolve_source(given)
    except SourceError as err:  # the malformed #github=: refused the same way, without echoing it
        assert SECRET not in f"{err} {err.source} {err.detail}"
        with pytest.raises(SourceError, match="#github= wants owner/name"):
            identity.resolve_source(expected)
        return
    shown = f"{repo.source} {repo.clone_url} {repo.name} {repo.web_url} {repo.github} {repo!r}"
    assert SECRET not in shown
    clean = identity.resolve_source(expected)
    assert (clean.source, clean.clone_url, clean.github, clean.repo_id) == (
        repo.source,
        repo.clone_url,
        repo.github,
        repo.repo_id,
    )


@pytest.mark.parametrize("spec", CLEAN)
def test_a_spec_without_a_credential_passes_the_door_unchanged(spec: str) -> None:
    assert identity.carries_credential(spec) is False
    assert identity.redact(spec) == spec


def test_the_trigger_forms_schema_refuses_every_credential_form_and_names_the_connection() -> None:
    from airflow.sdk import Param
    from airflow.sdk.exceptions import ParamValidationError
    from codepairs_airflow import REPO_SPEC_SCHEMA

    param = Param([], type="array", items=REPO_SPEC_SCHEMA)
    for given, _ in FORMS.values():
        with pytest.raises(ParamValidationError, match=r"connection git_<host>"):
            param.resolve([given.format(s=SECRET)])
    assert param.resolve(CLEAN) == CLEAN
    for untrimmed in (" octo/x", "octo/x ", ""):
        with pytest.raises(ParamValidationError):
            param.resolve([untrimmed])


def test_connection_ids_name_the_host_then_the_port() -> None:
    from codepairs_airflow import git_connection_ids

    assert git_connection_ids("https://Git.Example.com:8443/x.git") == [
        "git_git_example_com_8443",
        "git_git_example_com",
    ]
    assert git_connection_ids("https://github.com/octo/x.git") == ["git_github_com"]
    assert git_connection_ids("https://git.example.com:notaport/x.git") == ["git_git_example_com"]
    assert git_connection_ids("/srv/x") == []


def test_make_runs_door_moves_an_http_login_into_a_connection_and_drops_the_others() -> None:
    from codepairs_airflow import connections_from_urls

    specs = [
        f"https://us%40er:{SECRET}%3A1@git.example.com:8443/x.git",
        f"ssh://git:{SECRET}@git.example.com/x.git",
        f"https://git.example.com/y.git?access_token={SECRET}",
        "octo/x",
    ]
    clean, env, notes = connections_from_urls(specs)
    assert clean == [
        "https://git.example.com:8443/x.git",
        "ssh://git@git.example.com/x.git",
        "https://git.example.com/y.git",
        "octo/x",
    ]
    assert list(env) == ["AIRFLOW_CONN_GIT_GIT_EXAMPLE_COM_8443"]
    assert json.loads(env["AIRFLOW_CONN_GIT_GIT_EXAMPLE_COM_8443"]) == {
        "conn_type": "generic",
        "login": "us@er",
        "password": f"{SECRET}:1",
    }
    assert notes == [
        "https://git.example.com:8443/x.git: its credential goes to git through the connection "
        "git_git_example_com_8443, for this run only",
        "ssh://git@git.example.com/x.git: a credential git cannot use unattended was removed (ssh: keys or the "
        "agent; http(s): login and password in the Airflow connection git_git_example_com)",
        "https://git.example.com/y.git: a credential git cannot use unattended was removed (ssh: keys or the "
        "agent; http(s): login and password in the Airflow connection git_git_example_com)",
    ]


def test_list_repositories_door_removes_a_credential_with_a_warning_naming_the_connection(caplog) -> None:
    from codepairs_airflow import without_credentials

    given = [f"https://user:{SECRET}@git.example.com/x.git", "octo/x"]
    assert without_credentials(given) == ["https://git.example.com/x.git", "octo/x"]
    assert caplog.messages == [
        "https://git.example.com/x.git: its credential was removed (Airflow carries none in Params, XCom or logs); "
        "a private repository's login and password go in the Airflow connection git_git_example_com"
    ]


def test_git_auth_comes_from_the_hosts_connection(monkeypatch) -> None:
    from codepairs_airflow import git_auth

    monkeypatch.setenv(
        "AIRFLOW_CONN_GIT_GIT_EXAMPLE_COM", json.dumps({"conn_type": "generic", "login": "x", "password": SECRET})
    )
    expected = base64.b64encode(f"x:{SECRET}".encode()).decode()
    assert git_auth("https://git.example.com:8443/team/x.git") == expected  # no port-specific one: the host's
    assert git_auth("https://elsewhere.example.com/x.git") is None
    assert git_auth("ssh://git@git.example.com/x.git") is None  # ssh authenticates with keys
    assert git_auth("/srv/x#github=not a name") is None  # the crawl records why it cannot be read


def _repo(path: Path, n: int) -> GitRepo:
    repo = GitRepo(path)
    for i in range(n):
        repo.commit(f"Add the handler number {i} to the server", {f"srv/h{i}.py": f"H = {i}\n"})
    return repo


def _rows_as_text(engine, tables: list[str] | None = None) -> dict[str, str]:
    """Every row of the given tables (default: all tables of the schema) as Postgres prints it."""
    with engine.connect() as conn:
        if tables is None:
            tables = list(
                conn.execute(
                    sa.text("SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()")
                ).scalars()
            )
        return {
            t: conn.execute(sa.text(f"SELECT coalesce(string_agg(r::text, chr(10)), '') FROM \"{t}\" r")).scalar()
            for t in tables
        }


def test_a_file_url_with_a_password_is_crawled_and_nothing_keeps_the_password(engine, mirrors, tmp_path) -> None:
    """git reads ``file://u:PW@localhost/…`` (it ignores the user info): the crawl works, and neither
    ``repositories``, ``runs``, ``skips`` nor the mirror's config keeps the password."""
    repo = _repo(tmp_path / "local", 3)
    result = crawl.crawl_repository(engine, f"file://u:{SECRET}@localhost{repo.path}", CrawlConfig())
    assert (result.status, result.commits_new, result.source) == ("crawled", 3, f"file://localhost{repo.path}")
    missing = crawl.crawl_repository(engine, f"file://u:{SECRET}@localhost{tmp_path}/gone", CrawlConfig())
    assert (missing.status, missing.skip_reason) == ("skipped", "unreachable")
    stored = _rows_as_text(engine, ["repositories", "runs", "skips"])
    assert (
        f"file://localhost{tmp_path}/gone" in stored["repositories"]
        and f"file://localhost{repo.path}" in stored["runs"]
    )
    assert stored["skips"].count(",unreachable,") == 1
    assert [t for t, text in stored.items() if SECRET in text] == []
    (mirror,) = mirrors.iterdir()
    assert f"url = file://localhost{repo.path}\n" in (mirror / "config").read_text()


class _Served:
    """A dumb-HTTP git server over a bare copy of a repository that answers only the one credential."""

    def __init__(self, repo: GitRepo, root: Path, login: str, password: str) -> None:
        bare = root / "repo.git"
        subprocess.run(["git", "clone", "-q", "--bare", str(repo.path), str(bare)], check=True)
        subprocess.run(["git", "--git-dir", str(bare), "update-server-info"], check=True)
        expected = "Basic " + base64.b64encode(f"{login}:{password}".encode()).decode()

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *a, **kw) -> None:
                super().__init__(*a, directory=str(root), **kw)

            def do_GET(self) -> None:  # noqa: N802
                if self.headers.get("Authorization") != expected:
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="git"')
                    self.end_headers()
                    return
                super().do_GET()

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_port
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[list[_Served]]:
    started: list[_Served] = []
    yield started
    for s in started:
        s.server.shutdown()


def test_a_credential_from_a_secret_store_reaches_git_and_only_git(engine, mirrors, tmp_path, served) -> None:
    """``crawl_repository(auth=…)``: the credential of a connection clones a private repository whose
    URL carries none; without it the clone is refused."""
    (tmp_path / "srv").mkdir()
    served.append(_Served(_repo(tmp_path / "r", 2), tmp_path / "srv", "x-access-token", SECRET))
    url = f"http://127.0.0.1:{served[0].port}/repo.git"
    assert crawl.crawl_repository(engine, url, CrawlConfig()).skip_reason == "unreachable"
    auth = base64.b64encode(f"x-access-token:{SECRET}".encode()).decode()
    assert crawl.crawl_repository(engine, url, CrawlConfig(), auth=auth).commits_new == 2


def test_the_cli_uses_a_urls_credential_for_git_and_shows_or_keeps_it_nowhere(
    db_url, engine, mirrors, tmp_path, served, monkeypatch, capsys, caplog
) -> None:
    from codepairs import cli

    monkeypatch.setenv("CODEPAIRS_DATABASE_URL", db_url)
    (tmp_path / "srv").mkdir()
    served.append(_Served(_repo(tmp_path / "r", 2), tmp_path / "srv", "x-access-token", SECRET))
    local = _repo(tmp_path / "local", 3)
    private = f"http://x-access-token:{SECRET}@127.0.0.1:{served[0].port}/repo.git"
    assert cli.main(["crawl", private, f"file://u:{SECRET}@localhost{local.path}"]) == 0
    printed = capsys.readouterr()
    assert printed.out.splitlines() == [
        "repo: 2 commits read, 2 new; 2 pairs kept, skipped {}; gates passed",
        "local: 3 commits read, 3 new; 3 pairs kept, skipped {}; gates passed",
    ]
    shown = printed.out + printed.err + "\n".join(caplog.messages)
    files = "".join(p.read_bytes().decode("utf-8", "replace") for p in mirrors.rglob("*") if p.is_file())
    stored = _rows_as_text(engine)
    assert SECRET not in shown and SECRET not in files
    assert [t for t, text in stored.items() if SECRET in text] == []


def _airflow_rows(tables: list[str] | None = None) -> dict[str, str]:
    from airflow import settings

    return _rows_as_text(settings.engine, tables)


def test_no_credential_reaches_airflow_its_logs_or_the_pipeline_database(
    airflow_pipeline,  # noqa: F811
    engine,
    mirrors,
    tmp_path,
    served,
    monkeypatch,
    capfd,
    caplog,
) -> None:
    """The whole crawl DAG through ``dag.test()`` on every credential form, as ``make run REPOS=…``
    hands them over: two private repositories served over http (one with ``user:password@``, one with
    ``TOKEN@``), one local as ``file://u:PW@localhost``, and ssh, git:// and query-token forms that
    cannot be reached. The secret is then looked for in every table of Airflow's metadata database
    (``dag_run.conf``, ``xcom``, ``task_instance.rendered_map_index``, ``rendered_task_instance_fields``
    among them), every file under ``AIRFLOW_HOME``, everything printed or logged, every table of the
    pipeline database and the mirrors."""
    import os

    from airflow.sdk.exceptions import ParamValidationError
    from codepairs_airflow import connections_from_urls

    for i in range(2):
        (tmp_path / f"srv{i}").mkdir()
    served.append(_Served(_repo(tmp_path / "a", 2), tmp_path / "srv0", "x-access-token", f"{SECRET}-a"))
    served.append(_Served(_repo(tmp_path / "b", 3), tmp_path / "srv1", f"{SECRET}-b", ""))
    local = _repo(tmp_path / "c", 4)
    given = [
        f"http://x-access-token:{SECRET}-a@127.0.0.1:{served[0].port}/repo.git",
        f"http://{SECRET}-b@127.0.0.1:{served[1].port}/repo.git",
        f"file://u:{SECRET}-c@localhost{local.path}",
        f"ssh://git:{SECRET}-d@127.0.0.1:1/x.git",
        f"git://u:{SECRET}-e@127.0.0.1:1/x.git",
        f"http://127.0.0.1:1/x.git?access_token={SECRET}-f",
    ]
    dag = airflow_pipeline.get_dag("codepairs_crawl")

    # The trigger form refuses each of them before a run (and its conf) exists.
    runs_before = _airflow_rows(["dag_run"])["dag_run"].count("\n")
    for spec in given:
        with pytest.raises(ParamValidationError, match="connection git_<host>"):
            dag.test(run_conf={"repos": [spec]})
    assert _airflow_rows(["dag_run"])["dag_run"].count("\n") == runs_before

    # make run's door: URLs without credentials, the http logins in this process's connections.
    specs, connections, notes = connections_from_urls(given)
    assert sorted(connections) == [f"AIRFLOW_CONN_GIT_127_0_0_1_{s.port}" for s in sorted(served, key=lambda s: s.port)]
    for key, value in connections.items():
        monkeypatch.setenv(key, value)
    capfd.readouterr()  # what the refusals above printed quotes the value back to whoever typed it
    caplog.clear()
    assert str(dag.test(run_conf={"repos": specs}).state) == "success"
    printed = capfd.readouterr()
    with engine.connect() as conn:
        crawled = dict(
            conn.execute(
                sa.text("SELECT source, count(*) FROM commits JOIN repositories USING (repo_id) GROUP BY source")
            ).all()
        )
        statuses = dict(conn.execute(sa.text("SELECT source, status FROM repositories")).all())
    assert crawled == {
        specs[0]: 2,
        specs[1]: 3,
        f"file://localhost{local.path}": 4,
    }  # the connections' credentials worked
    assert statuses == {
        specs[0]: "crawled",
        specs[1]: "crawled",
        f"file://localhost{local.path}": "crawled",
        "ssh://git@127.0.0.1:1/x.git": "skipped",
        "git://u@127.0.0.1:1/x.git": "skipped",
        "http://127.0.0.1:1/x.git": "skipped",
    }

    airflow = _airflow_rows()
    # What the issue found the secret in holds this run's credential-free values: the search below is not vacuous.
    assert specs[0] in airflow["dag_run"] and specs[0] in airflow["xcom"]
    assert specs[0] in airflow["task_instance"] and specs[0] in airflow["rendered_task_instance_fields"]
    logged = printed.out + printed.err + "\n".join(caplog.messages)
    assert "Returned value was" in logged and specs[0] in logged
    files = {
        str(p): p.read_bytes().decode("utf-8", "replace")
        for root in (Path(os.environ["AIRFLOW_HOME"]), mirrors)
        for p in root.rglob("*")
        if p.is_file()
    }
    places = {**{f"airflow.{t}": v for t, v in airflow.items()}, **_rows_as_text(engine), **files, "output": logged}
    assert [where for where, text in places.items() if SECRET in text] == []
