"""The CLIs as a user runs them: `ingest`, `responder retrieve`, `responder eval-retrieval`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner


def run_cli(module: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    code = f"from {module} import main; main()"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=cwd,
                          env={"COLUMNS": "160", "PATH": "/usr/bin:/bin", "HOME": str(Path.home())})


@pytest.fixture(scope="module")
def ingested(tmp_path_factory, corpus_dir) -> tuple[Path, Path]:
    """The test articles ingested by the `ingest` CLI, as a user runs it."""
    root, articles = tmp_path_factory.mktemp("cli"), corpus_dir
    result = run_cli("ingest.cli", str(articles), "--store", str(root / "store"))
    assert result.returncode == 0, result.stderr
    for label, value in (("files seen", 3), ("added", 3), ("chunks embedded", 5), ("chunks stored", 5)):
        assert any(label in line and line.rstrip(" │").endswith(f" {value}") for line in result.stdout.splitlines()), \
            (label, result.stdout)
    return articles, root / "store"


def test_help_imports_nothing_heavy():
    code = ("import sys\nfrom click.testing import CliRunner\nfrom ingest.cli import cli as i\n"
            "from responder.cli import cli as r\n"
            "for c, a in ((i, ['--help']), (r, ['retrieve', '--help']), (r, ['eval-retrieval', '--help'])):\n"
            "    assert CliRunner().invoke(c, a).exit_code == 0\n"
            "heavy = [m for m in ('torch', 'transformers', 'chromadb', 'sentence_transformers') if m in sys.modules]\n"
            "print(heavy)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "[]", result.stderr


@pytest.mark.integration
def test_reingest_reports_unchanged(ingested):
    articles, store = ingested
    result = run_cli("ingest.cli", str(articles), "--store", str(store))
    assert result.returncode == 0
    assert any("unchanged" in line and line.rstrip(" │").endswith(" 3") for line in result.stdout.splitlines())
    assert any("chunks embedded" in line and line.rstrip(" │").endswith(" 0") for line in result.stdout.splitlines())


@pytest.mark.integration
def test_retrieve_prints_the_passages_as_json(ingested):
    from responder.cli import cli

    _, store = ingested
    result = CliRunner().invoke(cli, ["retrieve", "error bars on a median?", "--json", "--store", str(store)])
    assert result.exit_code == 0, result.output
    passages = json.loads(result.output)
    assert passages[0]["title"] == "Bootstrap Confidence Intervals"
    assert passages[0]["section"] == "Error bars on a median" and passages[0]["source"].endswith("bootstrap.md")

    result = CliRunner().invoke(cli, ["retrieve", "great video", "--store", str(store)])
    assert result.exit_code == 0 and "gets no context" in result.output

    result = CliRunner().invoke(cli, ["retrieve", "LAG in sql", "--top-k", "1", "--store", str(store)])
    assert result.exit_code == 0 and "LAG(revenue)" in result.output and "similarity" in result.output


@pytest.mark.integration
def test_eval_retrieval_scores_a_questions_file(ingested, tmp_path):
    from responder.cli import cli

    _, store = ingested
    questions = tmp_path / "q.jsonl"
    questions.write_text("\n".join(json.dumps(q) for q in [
        {"comment": "running total of sales per day", "expect": ["sql-window"]},
        {"comment": "my container reinstalls all packages each build", "expect": ["docker"]},
        {"comment": "how to do k-fold for forecasting", "expect": ["sql-window"]},  # a miss on purpose
        {"comment": "first!", "expect": []},
        {"comment": "what camera do you use", "expect": []},
    ]))
    result = CliRunner().invoke(cli, ["eval-retrieval", str(questions), "--json", "--store", str(store)])
    assert result.exit_code == 0, result.output
    scores = json.loads(result.output)
    assert (scores["on_topic"], scores["off_topic"]) == (3, 2)
    assert scores["hit_at_3"] == pytest.approx(2 / 3, abs=1e-3)
    assert scores["off_topic_no_context"] == 1.0
    table = CliRunner().invoke(cli, ["eval-retrieval", str(questions), "--store", str(store)])
    assert "hit@3" in table.output and "0.667" in table.output and "misses" in table.output


@pytest.mark.integration
def test_user_errors_are_one_line_and_exit_2(ingested, tmp_path):
    _, store = ingested
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"comment": "x", "expect": []}\nnot json\n')
    cases = [
        (("ingest.cli", str(tmp_path / "missing"), "--store", str(store)), "does not exist"),
        (("responder.cli", "retrieve", "hello", "--store", str(tmp_path / "empty")), "is empty; run `ingest"),
        (("responder.cli", "eval-retrieval", str(bad), "--store", str(store)), "bad.jsonl line 2 is not"),
    ]
    for args, message in cases:
        result = run_cli(*args)
        assert result.returncode == 2, result.stderr
        assert result.stderr.startswith("Error: ") and message in result.stderr
        assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_samples_reach_the_retrieval_goal(tmp_path, repo_root):
    """The project's own questions on the sample articles (about 2 minutes on 2 cores)."""
    store = str(tmp_path / "store")
    assert run_cli("ingest.cli", str(repo_root / "samples" / "articles"), "--store", store).returncode == 0
    for questions in (repo_root / "samples" / "retrieval_questions.jsonl",
                      repo_root / "tests" / "data" / "retrieval_holdout.jsonl"):
        result = run_cli("responder.cli", "eval-retrieval", str(questions), "--json", "--store", store)
        scores = json.loads(result.stdout)
        assert scores["hit_at_3"] >= 0.95 and scores["off_topic_no_context"] == 1.0, questions


@pytest.mark.integration
def test_eval_retrieval_scores_with_and_without_the_video(ingested, tmp_path):
    from responder.cli import cli

    _, store = ingested
    questions = tmp_path / "q.jsonl"
    questions.write_text("\n".join(json.dumps(q) for q in [
        {"comment": "what does LAG do exactly?", "expect": ["sql-window"], "video_title": "SQL window functions"},
        {"comment": "hey what mic do you use?", "expect": [], "video_title": "SQL window functions"},
    ]))
    scores = json.loads(CliRunner().invoke(cli, ["eval-retrieval", str(questions), "--json", "--store", str(store)]).output)
    assert scores["hit_at_1"] == 1.0 and scores["on_topic_no_context"] == 0.0 and scores["off_topic_no_context"] == 1.0
    assert scores["without_video"]["hit_at_1"] == 0.0 and scores["without_video"]["on_topic_no_context"] == 1.0
    assert scores["outcomes"][0]["rank"] == 1
    table = CliRunner().invoke(cli, ["eval-retrieval", str(questions), "--store", str(store)]).output
    assert "with the video" in table and "without it" in table


@pytest.mark.integration
def test_retrieve_takes_the_videos_title(ingested):
    from responder.cli import cli

    _, store = ingested
    args = ["retrieve", "what does LAG do exactly?", "--json", "--store", str(store)]
    assert json.loads(CliRunner().invoke(cli, args).output) == []
    found = json.loads(CliRunner().invoke(cli, [*args, "--video-title", "SQL window functions"]).output)
    assert found and "LAG(revenue)" in found[0]["text"]
