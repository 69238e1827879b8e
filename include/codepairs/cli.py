"""``codepairs``: stage-level runs without Airflow, on the same database and library as the DAGs."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from codepairs import datadocs, logs, pipeline, report, settings, store
from codepairs.config import PipelineConfig, load_config
from codepairs.errors import CodepairsError, ConfigError
from codepairs.export import dataset as export
from codepairs.terminal import visible


def configure_logging(verbose: bool) -> None:
    level = logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    logs.quiet_libraries()  # the same list the Airflow tasks quiet


def _config(args: argparse.Namespace) -> PipelineConfig:
    config = load_config(Path(args.config) if args.config else None)
    given = {k: getattr(args, k, None) for k in ("max_commits", "batch_size")}
    crawl_overrides = {k: v for k, v in given.items() if v is not None}
    if crawl_overrides:
        config = dataclasses.replace(config, crawl=dataclasses.replace(config.crawl, **crawl_overrides))
    if getattr(args, "no_select", False):
        config = dataclasses.replace(config, select=dataclasses.replace(config.select, enabled=False))
    return config


def cmd_crawl(args: argparse.Namespace) -> int:
    config = _config(args)
    engine = store.get_engine(args.database_url)
    status = 0
    for spec in pipeline.candidates(config, args.repos, args.search):
        state = pipeline.process_repository(engine, spec, config, Path.cwd())
        if state.get("github_error"):
            print(visible(f"{state['name']}: GitHub not crawled this time: {state['github_error']}"), file=sys.stderr)
            status = 1
        if state["status"] == "skipped":
            print(visible(f"{state['name']}: skipped ({state['skip_reason']}: {state['skip_detail']})"))
            continue
        ex = state["extract"]
        gh = state.get("github_crawl")
        github = ""
        if gh:
            github = f"GitHub {gh['status']}: {json.dumps(gh['written'])} written, {gh['links_new']} new links; "
        unread = f", {state['commits_skipped']} skipped as unreadable" if state.get("commits_skipped") else ""
        print(
            visible(
                f"{state['name']}: {state['commits_read']} commits read, {state['commits_new']} new{unread}; "
                f"{github}{ex['pairs_new']} pairs kept, skipped {json.dumps(ex['skipped'])}; gates passed"
            )
        )
    return status


def cmd_score(args: argparse.Namespace) -> int:
    r = pipeline.score_step(store.get_engine(args.database_url), _config(args))
    print(
        f"score: {r['pairs_scored']} pairs scored ({r['rescored']} again under changed rules), "
        f"categories {json.dumps(r['categories'], sort_keys=True)}; {r['selected']} of {r['scored_total']} "
        f"selected; gate passed"
    )
    return 0


def cmd_dedup(args: argparse.Namespace) -> int:
    r = pipeline.dedup_step(store.get_engine(args.database_url), _config(args))
    print(
        f"dedup: {r['pairs_in']} pairs in, {r['exact_duplicates']} exact and {r['near_duplicates']} near "
        f"duplicates, {r['groups_touched']} groups touched; {r['pairs_kept']} pairs kept in all; gate passed"
    )
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    config = _config(args)
    out = Path(args.out) if args.out else settings.default_export_dir()
    export.export_target(out)  # a folder the export may not replace is refused before the build runs
    result = pipeline.build(store.get_engine(args.database_url), out, config)
    print(
        f"exported {result.rows} pairs in {result.files} files to {result.out_dir} "
        f"(manifest sha256 {result.manifest_sha256})"
    )
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    engine = None if args.no_database else _verify_engine(args.database_url)
    checked = pipeline.verify_export(Path(args.dir), engine)
    against = {
        None: "",
        "recorded": " and the export recorded in the database",
        "no record": " (the database has no record of this export: the files were checked on their own)",
    }[checked.get("database")]
    print(f"ok: {checked['files']} files, {checked['rows']} pairs match {args.dir}/manifest.json{against}")
    return 0


def _verify_engine(url: str | None) -> Engine | None:
    """The pipeline database from the usual settings, or None (said on stderr) when none can be used:
    the files can still be checked against their manifest and each other."""
    try:
        return store.get_engine(url)
    except (SQLAlchemyError, CodepairsError, OSError) as err:
        where = store.redact(url) if url else "the configured database"
        lines = str(getattr(err, "orig", None) or err).strip().splitlines()
        reason = lines[0] if lines else type(err).__name__
        print(f"codepairs: note: cannot use {where} ({reason}): verifying the files only", file=sys.stderr)
        return None


def cmd_audit(args: argparse.Namespace) -> int:
    from codepairs.audit import audit

    result = audit(store.get_engine(args.database_url))
    if args.json:
        print(json.dumps(result.as_dict(), indent=2, sort_keys=True))
    for finding in [] if args.json else result.findings:
        print(f"changed: {finding}")
    rows, batches = sum(result.rows.values()), sum(result.batches.values())
    verdict = f"{len(result.findings)} changed" if result.findings else "nothing changed"
    print(f"audit: {rows} row checks and {batches} batches: {verdict}", file=sys.stderr if args.json else sys.stdout)
    return 1 if result.findings else 0


def cmd_fit_score(args: argparse.Namespace) -> int:
    from codepairs.quality import fit

    source = Path(args.eval_json)
    document = json.loads(source.read_text(encoding="utf-8"))
    sets = args.set or ["development"]  # the held-out sets are never fitted on unless named
    rows = [r for r in document["rows"] if r["set"] in sets and r.get("features")]
    result = fit.fit([fit.Labelled(r["features"], r["label"] == "good", r["repo_url"], r["label"]) for r in rows])
    provenance = fit.provenance(source, document, sets)
    out = Path(args.out) if args.out else settings.PROJECT_ROOT / "include" / "config" / "score_weights.yaml"
    fit.write_weights(out, result, provenance)
    if args.report:
        Path(args.report).write_text(fit.report_markdown(result, provenance), encoding="utf-8")
    loro = result.out_of_fold
    print(
        f"fitted {len(result.weights)} weights on {result.pairs} pairs ({result.good} good) from "
        f"{result.repositories} repositories, C={result.c}; leave-one-repository-out: ROC AUC {loro['roc_auc']}, "
        f"Brier {loro['brier']}, calibration error {loro['ece']}; wrote {out}"
    )
    return 0


def cmd_fit_category(args: argparse.Namespace) -> int:
    from codepairs.quality import category_model, fit

    source = Path(args.eval_json)
    document = json.loads(source.read_text(encoding="utf-8"))
    sets = args.set or ["development"]  # the held-out sets are never fitted on unless named
    result = category_model.fit(category_model.labelled_rows(document, sets))
    provenance = fit.provenance(source, document, sets)
    out = Path(args.out) if args.out else settings.PROJECT_ROOT / "include" / "config" / "category_weights.yaml"
    category_model.write_model(out, result, provenance)
    if args.report:
        Path(args.report).write_text(category_model.report_markdown(result, provenance), encoding="utf-8")
    figures = result.figures
    print(
        f"fitted {len(result.classes)} classes x {result.vocabulary} tokens on {result.pairs} pairs from "
        f"{result.repositories} repositories, C={result.c}, applied below rule confidence {result.apply_below}; "
        f"leave-one-repository-out accuracy {figures['shipped']['accuracy']} (model alone "
        f"{figures['model']['accuracy']}, hand rules {figures['rules']['accuracy']}); wrote {out}"
    )
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    print(report.format_summary(report.summary(store.get_engine(args.database_url))))
    return 0


def cmd_dashboard(args: argparse.Namespace) -> int:
    import uvicorn

    from codepairs import dashboard

    token = settings.dashboard_token()
    dashboard.check_binding(args.host, token)  # before the database: a refusal is one line, at once
    engine = store.get_engine(args.database_url)
    needs = "; requests need CODEPAIRS_DASHBOARD_TOKEN" if token else ""
    print(f"codepairs dashboard on http://{args.host}:{args.port}/ (Ctrl-C stops it{needs})")
    # log_level warning: no access log, so a ?token= never reaches one.
    app = dashboard.create_app(lambda: engine, token=token)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


def cmd_judge(args: argparse.Namespace) -> int:
    from codepairs.balance.synthesis import make_client
    from codepairs.quality import judge

    config = _config(args).judge
    if not config.url or not config.model:
        raise ConfigError("the judge is off: set judge.url and judge.model in the pipeline config")
    client = make_client(config.url, os.environ.get(config.api_key_env))
    r = judge.judge_pairs(
        store.get_engine(args.database_url), config, client, Path(args.out), args.limit, args.selected
    )
    print(
        f"judge: {r.judged} pairs judged by {config.model} ({json.dumps(r.labels, sort_keys=True)}), "
        f"{r.already} already in {args.out}, {len(r.failed)} without a usable answer (asked again next run)"
    )
    return 1 if r.failed else 0


def cmd_datadocs(args: argparse.Namespace) -> int:
    index, count = datadocs.rebuild(store.get_engine(args.database_url), keep=args.keep)
    print(f"GX Data Docs rebuilt from {count} gate result(s): {index}")
    return 0


def cmd_db(args: argparse.Namespace) -> int:
    if args.action == "stop":
        print("stopped" if store.stop_embedded() else "the embedded server was not running")
        return 0
    engine = store.get_engine(args.database_url)
    if args.action == "url":
        print(store.redact(engine.url.render_as_string(hide_password=False)))
    else:
        print(f"schema is current in {store.redact(engine.url.render_as_string(hide_password=False))}")
    return 0


# Each command: its function, its one-line help, what it does at length (None: the help says it all).
COMMANDS: dict[str, tuple[Callable[[argparse.Namespace], int], str, str | None]] = {
    "crawl": (cmd_crawl, "crawl repositories, gate, extract pairs, gate",
              "Crawl each repository (local path, file:// or https URL, or owner/name) into Postgres "
              "incrementally, then extract and gate its pairs."),
    "score": (cmd_score, "score and classify the gated pairs, rank them, then the score gate",
              "Features, score, explanation and category of every gated pair not scored under the current "
              "rules (include/config/scoring.yaml), then the ranking."),
    "dedup": (cmd_dedup, "exact and near-duplicate detection over the gated pairs, then its gate",
              "Deduplicate every gated pair not yet seen against everything before it."),
    "export": (cmd_export, "score, dedup, then write Parquet + JSONL shards and a manifest",
               "Dedup, then export every kept gated pair to DIR, atomically and deterministically."),
    "dashboard": (cmd_dashboard, "the dataset dashboard in a browser, without Airflow",
                  "Serve the dashboard (funnel, categories, scores, gates, spot checks) that Airflow shows at "
                  "/codepairs."),
    "verify": (cmd_verify, "re-check an export against its manifest, its shards and the database",
               "Fail on any changed, missing or extra file of an export, on a JSONL shard that differs from "
               "its Parquet twin, and on a manifest other than the one the database recorded for the folder "
               "(when a database can be used; --no-database checks the files only)."),
    "audit": (cmd_audit, "recheck every stored row and batch against its checksum, naming what changed",
              "Recompute the checksum of every stored commit, pair, score, synthetic pair and GitHub record, "
              "and the digest of every sealed batch and of the balanced set; list each that differs "
              "(exit 1), or say that nothing changed (exit 0)."),
    "fit-score": (cmd_fit_score, "fit the score's weights on labelled pairs (leave-one-repository-out figures)",
                  "Fit the score's weights and bias by logistic regression on the labelled pairs of an "
                  "`eval/evaluate.py --json` run (their stored features; target: judged good), choosing the "
                  "regularisation by leave-one-repository-out, and write them, with the data and code they "
                  "came from, to the file scoring.yaml's `fitted_weights` names."),
    "fit-category": (cmd_fit_category, "fit the learned category classifier on labelled pairs (LORO figures)",
                     "Fit a multinomial logistic regression from the tokens of a pair (the hand rules' answer, "
                     "the score's features, file kinds, summary words, path extensions and folders) to the "
                     "labelled category of an `eval/evaluate.py --json` run, choosing the regularisation by "
                     "leave-one-repository-out accuracy, and write it, with the data and code it came from, to "
                     "the file scoring.yaml's `category_model` names."),
    "judge": (cmd_judge, "the optional LLM judge: scored commit pairs judged against the rubric, as labels",
              "Ask the model at judge.url (OpenAI-compatible; key from $CODEPAIRS_LLM_API_KEY) to judge scored "
              "commit pairs against eval/RUBRIC.md, appending a row per verdict (label, category, problem "
              "codes, reason) to a labels CSV that eval/evaluate.py --labels reads; pairs already in the file "
              "are not asked again."),
    "datadocs": (cmd_datadocs, "rebuild the GX Data Docs of the gates' results from the database",
                 "Make the GX Data Docs site (settings: CODEPAIRS_DATA_DOCS_DIR, default <data dir>/gx) again "
                 "from gate_results: the latest --keep results of each suite, swapped in whole. Gate runs "
                 "update it as they go; this is for a site deleted, moved or older than the database."),
    "summary": (cmd_summary, "repositories, commits, pairs, skips by reason, last export", None),
    "db": (cmd_db, "the pipeline database: url, upgrade, stop (embedded server)", None),
}  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="codepairs", description=__doc__)
    parser.add_argument("--database-url", help="pipeline database (default: $CODEPAIRS_DATABASE_URL, else embedded)")
    parser.add_argument("--config", help="pipeline YAML (default: include/config/pipeline.yaml)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress")
    sub = parser.add_subparsers(dest="command", required=True)
    commands = {}
    for name, (func, summary, description) in COMMANDS.items():
        commands[name] = sub.add_parser(name, help=summary, description=description)
        commands[name].set_defaults(func=func)
    crawl = commands["crawl"]
    crawl.add_argument("repos", nargs="*", help="repositories (default: the config's list)")
    crawl.add_argument("--max-commits", type=int, help="newest N commits per branch on a first crawl")
    crawl.add_argument("--batch-size", type=int, help="commits per COPY batch")
    crawl.add_argument("--search", help="also crawl what this GitHub repository search finds (select.search_limit)")
    crawl.add_argument("--no-select", action="store_true", help="skip the licence and activity checks")
    commands["export"].add_argument("--out", help="export folder (default: .data/export)")
    commands["dashboard"].add_argument(
        "--host", default="127.0.0.1", help="address to bind (not a loopback one: CODEPAIRS_DASHBOARD_TOKEN required)"
    )
    commands["dashboard"].add_argument("--port", type=int, default=8765)
    commands["verify"].add_argument("dir", help="export folder")
    commands["verify"].add_argument("--no-database", action="store_true", help="check the files only")
    commands["audit"].add_argument("--json", action="store_true", help="the full report as JSON")
    fit_score = commands["fit-score"]
    fit_score.add_argument("eval_json", help="the --json output of eval/evaluate.py")
    fit_score.add_argument("--set", action="append", help="label sets to fit on (default: development)")
    fit_score.add_argument("--out", help="weights file (default: include/config/score_weights.yaml)")
    fit_score.add_argument("--report", help="also write the figures and the reliability table as Markdown here")
    fit_category = commands["fit-category"]
    fit_category.add_argument("eval_json", help="the --json output of eval/evaluate.py")
    fit_category.add_argument("--set", action="append", help="label sets to fit on (default: development)")
    fit_category.add_argument("--out", help="model file (default: include/config/category_weights.yaml)")
    fit_category.add_argument("--report", help="also write the LORO figures and confusions as Markdown here")
    judge_cmd = commands["judge"]
    judge_cmd.add_argument("--out", required=True, help="labels CSV to append to")
    judge_cmd.add_argument("--limit", type=int, help="judge at most N pairs this run")
    judge_cmd.add_argument("--selected", action="store_true", help="only pairs the ranking selected")
    commands["datadocs"].add_argument("--keep", type=int, default=datadocs.KEEP_PER_SUITE, help="results per suite")
    commands["db"].add_argument("action", choices=["url", "upgrade", "stop"])
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.verbose)
    try:
        return args.func(args)
    except CodepairsError as err:
        print(visible(f"codepairs: error: {err}"), file=sys.stderr)
        return 1
    except Exception as err:  # the database gone or the disk full: one line, no traceback; anything else raises
        where = store.redact(args.database_url) if args.database_url else "the configured database"
        line = store.lost_resource(err, where)
        if line is None:
            raise
        print(visible(f"codepairs: error: {line}"), file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
