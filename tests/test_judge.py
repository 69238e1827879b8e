"""The optional LLM judge against a local OpenAI-compatible server: the rubric and the pair in the
prompt, verdicts appended as a labels file that eval/evaluate.py reads, unusable answers left for the
next run, a rerun that asks nothing twice, the key sent to the endpoint only, and off by default."""

from __future__ import annotations

import csv
import importlib.util
import json
import logging
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from codepairs import cli, pipeline, store
from codepairs.balance.synthesis import make_client
from codepairs.config import JudgeConfig, PipelineConfig
from codepairs.quality import judge
from codepairs.settings import PROJECT_ROOT
from fakemodel import FakeModel
from gitrepo import GitRepo

KEY = "sk-judge-test-key-0123456789"
VERDICTS = {
    "Add a timeout option to the HTTP client": {
        "label": "good",
        "category": "feature",
        "problems": [],
        "reason": "Adds a timeout   parameter;\nspecific message",
    },
    "Mention the timeout in the guide": {
        "label": "bad",
        "category": "docs",
        "problems": ["trivial", "invented_code"],  # a code not in the list is dropped
        "reason": "One line of docs",
    },
}


@pytest.fixture
def repo(tmp_path: Path) -> tuple[GitRepo, list[str]]:
    repo = GitRepo(tmp_path / "client")
    shas = [
        repo.commit(
            "Add the HTTP client with a get helper", {"src/client.py": "def get(url):\n    return fetch(url)\n"}
        ),
        repo.commit(
            "Add a timeout option to the HTTP client",
            {"src/client.py": "def get(url, timeout=10):\n    return fetch(url, timeout=timeout)\n"},
        ),
        repo.commit("Mention the timeout in the guide", {"docs/guide.md": "Pass timeout= to get().\n"}),
    ]
    return repo, shas


class Judge:
    """Answers from VERDICTS by the pair's instruction; anything else gets prose (an unusable answer)
    until ``fixed``, then a borderline verdict."""

    def __init__(self) -> None:
        self.fixed = False

    def __call__(self, body: dict[str, Any]) -> str:
        user = body["messages"][1]["content"]
        instruction = user.split("\n")[1]
        if instruction in VERDICTS:
            return "```json\n" + json.dumps(VERDICTS[instruction]) + "\n```"
        if self.fixed:
            return json.dumps({"label": "borderline", "category": "feature", "problems": ["vague"], "reason": "Thin"})
        return "I think this one is quite good."


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_verdicts_become_a_labels_file_and_a_rerun_asks_only_what_failed(
    engine, mirrors, repo, tmp_path: Path, caplog
) -> None:
    caplog.set_level(logging.INFO)
    git, shas = repo
    pipeline.process_repository(engine, str(git.path), PipelineConfig())
    pipeline.score_step(engine, PipelineConfig())
    answers = Judge()
    server = FakeModel(answers).start()
    out = tmp_path / "judged.csv"
    try:
        config = JudgeConfig(url=server.url, model="tiny-judge")
        client = make_client(config.url, KEY)
        first = judge.judge_pairs(engine, config, client, out)
        assert (first.judged, first.already, len(first.failed), first.labels) == (2, 0, 1, {"good": 1, "bad": 1})
        assert len(server.prompts) == 3
        system = server.prompts[0]["messages"][0]["content"]
        assert system.startswith("# Labelling rubric") and "- `release`: a release" in system
        assert '"category": one of [bug_fix, feature,' in system
        assert all(p["temperature"] == 0 and p["model"] == "tiny-judge" for p in server.prompts)
        timeout = next(p["messages"][1]["content"] for p in server.prompts if "timeout option" in str(p))
        assert timeout.startswith("Instruction:\nAdd a timeout option to the HTTP client\n\nFiles: src/client.py\n")
        assert "+def get(url, timeout=10):" in timeout
        source = str(git.path.resolve())
        expected = [
            {
                "repo_url": source,
                "commit": shas[1],
                "label": "good",
                "category": "feature",
                "reason": "Adds a timeout parameter; specific message",
                "problems": "",
                "judge": "tiny-judge",
            },
            {
                "repo_url": source,
                "commit": shas[2],
                "label": "bad",
                "category": "docs",
                "reason": "One line of docs",
                "problems": "trivial",
                "judge": "tiny-judge",
            },
        ]
        assert sorted(_rows(out), key=lambda r: r["commit"]) == sorted(expected, key=lambda r: r["commit"])
        assert "no usable verdict for pair" in caplog.text

        # The next run asks only about the pair without a verdict; the one after asks nothing.
        answers.fixed = True
        second = judge.judge_pairs(engine, config, client, out)
        assert (second.judged, second.already, second.failed) == (1, 2, [])
        assert len(server.prompts) == 4 and "get helper" in server.prompts[3]["messages"][1]["content"]
        assert judge.judge_pairs(engine, config, client, out).judged == 0 and len(server.prompts) == 4
        rows = _rows(out)
        assert len(rows) == 3 and {r["commit"] for r in rows} == set(shas)
        assert next(r for r in rows if r["commit"] == shas[0])["problems"] == "vague"

        # A limit counts what was asked; the key went to the endpoint only.
        limited = judge.judge_pairs(engine, config, client, tmp_path / "one.csv", limit=1)
        assert limited.judged == 1 and len(_rows(tmp_path / "one.csv")) == 1
        assert set(server.auth) == {f"Bearer {KEY}"}
        assert KEY not in out.read_text() and KEY not in caplog.text
    finally:
        server.stop()

    # eval/evaluate.py reads the file as a labels file (so fit-score can fit on its verdicts).
    spec = importlib.util.spec_from_file_location("evaluate", PROJECT_ROOT / "eval" / "evaluate.py")
    assert spec is not None and spec.loader is not None
    evaluate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(evaluate)
    labels = evaluate.read_labels(out)
    assert [(r["commit"], r["label"], r["set"]) for r in labels] == [
        (r["commit"], r["label"], "development") for r in rows
    ]


def test_the_judge_command_is_off_until_configured_and_reads_the_key_from_the_environment(
    db_url, mirrors, repo, tmp_path: Path, capsys, monkeypatch
) -> None:
    monkeypatch.setenv("CODEPAIRS_DATABASE_URL", db_url)
    git, _ = repo
    assert cli.main(["crawl", str(git.path)]) == 0
    assert cli.main(["score"]) == 0
    out = tmp_path / "judged.csv"
    assert cli.main(["judge", "--out", str(out)]) == 1
    assert "the judge is off: set judge.url and judge.model" in capsys.readouterr().err and not out.exists()

    answers = Judge()
    answers.fixed = True
    server = FakeModel(answers).start()
    try:
        config = tmp_path / "pipeline.yaml"
        shipped = (PROJECT_ROOT / "include" / "config" / "pipeline.yaml").read_text()
        config.write_text(
            shipped.replace("  url: null ", f"  url: {server.url} ").replace("  model: null", "  model: tj")
        )
        monkeypatch.setenv("CODEPAIRS_LLM_API_KEY", KEY)
        assert cli.main(["--config", str(config), "judge", "--out", str(out), "--selected"]) == 0
        printed = capsys.readouterr().out
    finally:
        server.stop()
    with store.get_engine(db_url).connect() as conn:
        selected = conn.execute(
            sa.text(
                "SELECT count(*) FROM pair_scores s JOIN pairs p USING (pair_id) WHERE s.selected AND p.kind = 'commit'"
            )
        ).scalar_one()
    assert 0 < selected == len(_rows(out)) == len(server.prompts)
    assert printed.startswith(f"judge: {selected} pairs judged by tj (") and f"0 already in {out}, 0 without" in printed
    assert set(server.auth) == {f"Bearer {KEY}"} and KEY not in printed


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ('{"label": "good", "category": "style", "problems": ["trivial"], "reason": "x"}', ("good", "style")),
        ('```\n{"label": "bad", "category": "other", "reason": "Release"}\n```', ("bad", "other")),
        ('{"label": "great", "category": "feature", "problems": [], "reason": "x"}', None),  # not a label
        ('{"label": "good", "category": "chore", "problems": [], "reason": "x"}', None),  # not a category
        ('{"label": "good", "category": "feature", "problems": "vague", "reason": "x"}', None),  # not a list
        ('["good"]', None),
        ("good", None),
    ],
)
def test_an_answer_is_a_verdict_only_when_it_is_the_json_asked_for(answer: str, expected: tuple | None) -> None:
    verdict = judge.parse_verdict(answer)
    assert (verdict and (verdict.label, verdict.category)) == expected
