"""Retrieval configured once (knowledge.config): recorded by training, read back by serving."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import pytest
from click.testing import CliRunner

from base.settings import Settings
from knowledge.config import RetrievalConfig, for_adapter

RECORD = {"store": "", "chroma_url": None, "collection": "articles", "embedder": "all-MiniLM-L6-v2",
          "top_k": 2, "min_similarity": 0.37}


def test_without_a_record_the_configured_setup_is_served():
    configured = RetrievalConfig(store=Path("/srv/kb"), top_k=4, min_similarity=None)
    assert for_adapter(configured, set(), None) == (configured, [])


def test_the_recorded_setup_is_the_default(tmp_path):
    trained_store = tmp_path / "kb"
    trained_store.mkdir()
    config, notes = for_adapter(RetrievalConfig(store=tmp_path / "elsewhere"), set(),
                                {**RECORD, "store": str(trained_store)})
    assert (config.store, config.top_k, config.min_similarity) == (trained_store.resolve(), 2, 0.37)
    assert notes == []


def test_an_explicit_setting_that_differs_is_honoured_with_one_line_saying_so():
    configured = RetrievalConfig(store=Path("/srv/kb"), min_similarity=0.6, top_k=2)
    config, notes = for_adapter(configured, {"min_similarity"}, RECORD)
    assert config.min_similarity == 0.6
    assert notes == ["retrieval: min_similarity is 0.6 as set, but the adapter was trained with 0.37; "
                     "its replies may differ from its evaluation"]


def test_hybrid_and_focus_are_settings_and_recorded_like_the_rest(monkeypatch):
    from base.settings import load_settings

    monkeypatch.setenv("RESPONDER_HYBRID", "false")
    settings = load_settings(store="/srv/kb")
    configured = RetrievalConfig.of(settings)
    assert (configured.hybrid, configured.focus) == (False, True)
    config, notes = for_adapter(configured, settings.model_fields_set, {**RECORD, "hybrid": True, "focus": True})
    assert config.hybrid is False and notes == [
        "retrieval: hybrid is False as set, but the adapter was trained with True; its replies may differ "
        "from its evaluation"]
    assert for_adapter(RetrievalConfig(store=Path("/srv/kb")), set(), {**RECORD, "hybrid": False})[0].hybrid is False


def test_a_recorded_store_that_is_not_here_leaves_the_configured_one(tmp_path):
    config, notes = for_adapter(RetrievalConfig(store=tmp_path), set(), {**RECORD, "store": "/gone/kb"})
    assert config.store == tmp_path and len(notes) == 1 and "/gone/kb, which is not here" in notes[0]


def tiny_run(tiny_model_dir: Path, store: Path, out: Path, tmp_path: Path, env: dict[str, str]) -> dict:
    from finetune.cli import cli

    data = tmp_path / "pairs.csv"
    with data.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["comment", "reply"])
        w.writerows([(f"how do I get a running total per day, part {n}?", "Use SUM OVER. Bye!") for n in range(8)])
    args = ["run", "--base-model", str(tiny_model_dir), "--data", str(data), "--output", str(out),
            "--store", str(store), "prompt.sign_off=Bye!", "train.batch_size=4", "train.micro_batch_size=2",
            "train.max_steps=1", "samples.count=0"]
    result = CliRunner().invoke(cli, args, env=env)
    assert result.exit_code == 0, (result.output, result.exception)
    return json.loads((out / "adapter" / "responder.json").read_text())["retrieval"]


@pytest.mark.integration
def test_training_records_its_setup_without_the_environment_and_serving_reads_it_back(
        tiny_model_dir, knowledge_store, tmp_path, monkeypatch, caplog):
    from knowledge.store import open_knowledge_base
    from responder.factory import build_retriever, plan_serving

    calibrated = open_knowledge_base(Settings(store=knowledge_store)).threshold()
    env = {"RESPONDER_MIN_SIMILARITY": "0.9", "RESPONDER_COLLECTION": "elsewhere", "RESPONDER_TOP_K": "7"}
    recorded = tiny_run(tiny_model_dir, knowledge_store, tmp_path / "run", tmp_path, env)
    assert recorded["min_similarity"] == pytest.approx(calibrated)  # none of the environment reached training
    assert (recorded["collection"], recorded["top_k"]) == ("articles", 3)
    assert recorded["store"] == str(knowledge_store.resolve())

    adapter = tmp_path / "run" / "adapter"
    as_trained = plan_serving(Settings(adapter=adapter))  # nothing set: served as trained
    assert as_trained.retrieval.store == knowledge_store.resolve() and as_trained.retrieval_notes == ()
    assert as_trained.retrieval.min_similarity == pytest.approx(calibrated)
    moved = plan_serving(Settings(adapter=adapter, store=tmp_path / "moved"))  # set: honoured, and said
    assert moved.retrieval.store == tmp_path / "moved" and "store is" in moved.retrieval_notes[0]

    monkeypatch.setenv("RESPONDER_MIN_SIMILARITY", "0.6")
    plan = plan_serving(Settings(adapter=adapter))
    assert plan.retrieval.min_similarity == 0.6
    with caplog.at_level(logging.WARNING, logger="responder.factory"):
        kb = build_retriever(plan.retrieval, plan.retrieval_notes)
    assert kb.threshold() == 0.6
    assert f"min_similarity is 0.6 as set, but the adapter was trained with {round(calibrated, 4)}" in caplog.text
