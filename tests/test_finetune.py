"""`finetune`: config checks, data, reply-only loss, a real two-step run, resume, bad input, estimate.

Training runs use conftest's tiny Llama (real SmolLM2 tokenizer and chat template) and drive the
real CLI, in-process with click's CliRunner or as a subprocess where exit codes and kills matter.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest
from click.testing import CliRunner

from base.errors import UserError
from finetune.cli import cli
from knowledge.triage import INTENTS
from tests.support import SHORT_PAIRS as PAIRS
from tests.support import SIGN_OFF, tiny_args, write_csv


@pytest.fixture(scope="module")
def pairs_csv(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("pairs")
    return write_csv(d / "train.csv", [(c, f"{r}\n{SIGN_OFF}") for c, r in PAIRS])


def cli_subprocess(*args, timeout=240):
    return subprocess.run([sys.executable, "-c", "from finetune.cli import main; main()", *args],
                          capture_output=True, text=True, timeout=timeout)


# --- pure logic ---------------------------------------------------------------------------------


def test_help_does_not_import_heavy_libraries():
    code = ("import sys; from click.testing import CliRunner; from finetune.cli import cli; "
            "r = CliRunner().invoke(cli, ['run', '--help']); assert r.exit_code == 0, r.output; "
            "print(sorted(m for m in ('torch', 'transformers', 'peft', 'bitsandbytes') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_config_reports_every_problem_at_once():
    from finetune.config import load_config

    with pytest.raises(UserError) as exc:
        load_config("default", ["lora.r=0", "lora.rank=4", "train.optimizer=sgd", "train.epochs=two"],
                    {"data.path": "x.csv"})
    msg = str(exc.value)
    assert "\n" not in msg
    for part in ("lora.r=0 must be at least 1", "unknown key 'lora.rank'", "train.optimizer='sgd'",
                 "train.epochs='two' must be 'auto' or a whole number"):
        assert part in msg, msg


def test_config_names_every_bad_key_and_value_in_one_message():
    from finetune.config import load_config

    with pytest.raises(UserError) as exc:
        load_config("default", ["train.epohcs=2", "lora.alhpa=16", "lora.r=0"], {"data.path": "x.csv"})
    msg = str(exc.value)
    assert "\n" not in msg and msg.startswith("invalid config: "), msg
    for part in ("override: unknown key 'train.epohcs' (did you mean 'train.epochs'?)",
                 "override: unknown key 'lora.alhpa' (did you mean 'lora.alpha'?)", "lora.r=0 must be at least 1"):
        assert part in msg, msg


def test_config_sections_are_strict_models_and_config_yaml_loads_back(tmp_path):
    from pydantic import ValidationError

    from finetune.config import TrainConfig, dump_config, load_config

    with pytest.raises(ValidationError):
        TrainConfig(epohcs=3)
    cfg = load_config("demo", ["train.learning_rate=1e-4", "data.path=x.csv"])
    (tmp_path / "config.yaml").write_text(dump_config(cfg))
    assert load_config(str(tmp_path / "config.yaml")).to_dict() == cfg.to_dict()
    assert cfg.train.learning_rate == 1e-4 and cfg.prompt.style.sign_off == SIGN_OFF


def test_config_overrides_and_presets_resolve():
    from finetune.config import load_config

    cfg = load_config("demo", ["lora.r=16", "lora.target_modules=[q_proj, v_proj]"], {"train.epochs": 1})
    assert (cfg.lora.r, cfg.lora.target_modules, cfg.train.epochs) == (16, ["q_proj", "v_proj"], 1)
    assert cfg.prompt.sign_off == SIGN_OFF and "Nadia Okafor" in cfg.prompt.persona
    for preset in Path("finetune/presets").glob("*.yaml"):
        assert preset.read_text().startswith("# finetune run --config"), preset


def test_data_formats_columns_and_warnings(tmp_path):
    from finetune.data import load_pairs

    p = write_csv(tmp_path / "a.csv", [("hi", "hello"), ("hi", "hello"), ("q", "a")], header=("Comment", "Response"))
    loaded = load_pairs(str(p))
    assert [x.comment for x in loaded.pairs] == ["hi", "hi", "q"]
    assert "duplicate" in loaded.warnings[0] and "line 3 repeats line 2" in loaded.warnings[0]
    j = tmp_path / "m.jsonl"
    j.write_text(json.dumps({"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"},
                                          {"role": "assistant", "content": "a"}]}) + "\n")
    assert [(x.comment, x.reply) for x in load_pairs(str(j)).pairs] == [("u", "a")]
    bad = write_csv(tmp_path / "b.csv", [("ok", "fine"), ("", "x"), ("y", " ")])
    with pytest.raises(UserError, match=r"line 3: empty comment; line 4: empty reply"):
        load_pairs(str(bad))


def test_reply_only_labels_and_eos(tokenizer):
    from base.prompt import CommentInput, PromptStyle, encode_prompt
    from finetune.data import Pair, encode_pairs

    style = PromptStyle(persona="Nadia.", sign_off=SIGN_OFF)
    [ex], _ = encode_pairs(tokenizer, style, [Pair("great video!", "Thank you!", "line 2")], 512)
    prompt = encode_prompt(tokenizer, style, CommentInput("great video!"))
    assert ex.input_ids[: len(prompt)] == prompt  # the serving prompt is a prefix
    assert ex.labels[: len(prompt)] == [-100] * len(prompt)
    assert ex.labels[-1] == tokenizer.eos_token_id  # the model learns to stop
    learned = tokenizer.decode([t for t in ex.labels if t != -100])
    assert learned == f"Thank you!\n{SIGN_OFF}{tokenizer.eos_token}"


def test_reply_loss_matches_full_head_loss(tiny_model_dir, tokenizer):
    """Slicing hidden states before the head gives exactly the loss of the full-vocabulary head."""
    import torch
    from transformers import AutoModelForCausalLM

    from base.prompt import PromptStyle
    from finetune.data import Pair, encode_pairs
    from finetune.loss import collate, reply_loss_sum, shared_prefix_len

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    exs, _ = encode_pairs(tokenizer, PromptStyle(sign_off=SIGN_OFF), [Pair(c, r, "") for c, r in PAIRS[:3]], 512)
    batch = collate(exs, [0, 1, 2], tokenizer.pad_token_id, "cpu")
    assert (batch["labels"][batch["attention_mask"] == 0] == -100).all()  # padding never carries loss
    assert shared_prefix_len(batch) > 16  # the system prompt is shared: computed once per batch
    with torch.no_grad():
        reference = model(**batch).loss
    for share in (True, False):
        total, n = reply_loss_sum(model, batch, share_prefix=share)
        assert n == sum(sum(1 for t in e.labels if t != -100) for e in exs)
        assert torch.isclose(total / n, reference, atol=1e-4), share
    # Gradients through the shared prefix match the plain forward's too.
    grads = []
    for share in (True, False):
        model.zero_grad()
        total, n = reply_loss_sum(model, batch, share_prefix=share)
        total.backward()
        grads.append(model.model.layers[0].self_attn.q_proj.weight.grad.clone())
    assert torch.allclose(grads[0], grads[1], atol=1e-4, rtol=1e-3)


# --- the real CLI ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def nf4_run(tiny_model_dir, pairs_csv, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "nf4"
    result = CliRunner().invoke(cli, tiny_args(tiny_model_dir, pairs_csv, out, "train.max_steps=2",
                                               "train.epochs=1"))
    assert result.exit_code == 0, result.output + repr(result.exception)
    return out, result.output


def test_two_step_run_learns_and_writes_every_output(nf4_run, tiny_model_dir):
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from engine.models import cpu_has_bf16

    out, log = nf4_run
    assert "Optimizer: adamw_8bit" in log and "NF4 + double quantization" in log
    assert f"compute {'bfloat16' if cpu_has_bf16() else 'float32'} (" in log
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if r["kind"] == "step"]
    evals = [r for r in records if r["kind"] == "eval"]
    assert [r["step"] for r in steps] == [1, 2]
    assert "epoch 1: eval loss" in log  # max_steps ended the epoch early: evaluated all the same
    assert all(0 < r["loss"] < 20 for r in steps)
    assert evals[-1]["eval_loss"] < evals[0]["eval_loss"]  # it learned something
    summary = records[-1]
    assert summary["kind"] == "summary" and summary["peak_rss_mb"] > 0 and "weights_mb" in summary["estimate"]
    for name in ("config.yaml", "loss.png", "samples.md", "adapter/adapter_model.safetensors",
                 "adapter/responder.json"):
        assert (out / name).stat().st_size > 0, name
    assert not list(out.rglob(".*tmp*")), "temporary files left behind"
    adapter = load_file(out / "adapter" / "adapter_model.safetensors")
    assert {str(t.dtype) for t in adapter.values()} == {"torch.float32"}  # 16-bit compute, float32 adapter
    cfg = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert not cfg.get("modules_to_save")  # vLLM refuses adapters with modules_to_save
    info = json.loads((out / "adapter" / "responder.json").read_text())
    assert info["quantization"] == "nf4" and info["sign_off"] == SIGN_OFF
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), out / "adapter")
    assert any("lora_A" in n for n, _ in model.named_parameters())
    samples = (out / "samples.md").read_text()
    assert "| comment | base | tuned | reference |" in samples and "| reply-token loss" in samples
    evaluation = json.loads((out / "eval.json").read_text())
    assert set(evaluation["modes"]) == {"base", "tuned"}
    assert len(evaluation["replies"]) == sum(m["count"] for m in evaluation["modes"].values()) >= 2
    for figure in ("distinct_rate", "stock_rate", "misfit_rate", "grounded_rate", "cited_rate", "redrafted_rate"):
        assert all(figure in m for m in evaluation["modes"].values()), figure
    assert all(r["intent"] in INTENTS and {"raw", "reply", "stock", "misfit"} <= set(r) for r in evaluation["replies"])
    assert all(1 <= r["drafts"] <= 3 for r in evaluation["replies"])  # the first draft and two redrafts at most
    assert "| stock replies" in samples and "## Epochs: the adapter kept is the one whose replies score best" in samples
    trained = [r for r in evals if r["epoch"] > 0]
    assert trained and all(set(r["figures"]) >= {"stock_rate", "distinct_rate"} and "selection" in r for r in trained)


def eval_rows(cases: list[tuple[str, str]], passages: list[list[dict]] | None = None,
              citation: str = "") -> list[dict]:
    """Reply rows as `finetune eval` builds them, for (comment, generated reply) pairs."""
    from base.prompt import Passage
    from finetune.evaluation import _row

    rows = []
    for n, (comment, reply) in enumerate(cases):
        found = [Passage.from_dict(p) for p in (passages or [[]] * len(cases))[n]]
        item = types.SimpleNamespace(comment=comment, passages=found)
        rows.append(_row("tuned+passages", item, "reference reply", reply + "\n" + SIGN_OFF, SIGN_OFF, citation))
    return rows


def test_the_epoch_kept_is_the_one_whose_replies_answer_not_the_lowest_loss():
    from finetune.evaluation import selection_badness

    stock = {"stock_rate": 0.35, "misfit_rate": 0.3, "distinct_rate": 0.65, "grounded_rate": 0.2}
    answers = {"stock_rate": 0.0, "misfit_rate": 0.0, "distinct_rate": 1.0, "grounded_rate": 0.6}
    assert selection_badness(3.0, 3.5, answers) < selection_badness(2.8, 3.5, stock)
    assert selection_badness(3.0, 3.5, None) == 3.0  # samples.select_by: loss


def test_eval_figures_see_one_stock_sentence_handed_to_every_question():
    from base.prompt import PromptStyle
    from finetune.evaluation import judge, summarize

    stock = "Thanks for the kind words! I hope this helps."
    questions = ["is text embedding the same as tokenization?", "how are edge directions found in GES?",
                 "wavelet or FFT for EEG data?", "which xgboost params first?"]
    rows = eval_rows([(q, stock) for q in questions])
    judge(rows, ["question"] * 4, ["thanks"] * 4, PromptStyle(sign_off=SIGN_OFF))
    figures = summarize(rows, 1.0, [], PromptStyle(sign_off=SIGN_OFF))
    # The checks of one reply at a time see nothing wrong: no loop, echo, empty or invented link...
    assert figures["loop_rate"] == figures["echo_rate"] == figures["empty_rate"] == figures["invented_link_rate"] == 0
    # ... the figures do.
    assert figures["stock_rate"] == 1.0 and figures["misfit_rate"] == 1.0 and figures["distinct_rate"] == 0.25
    assert rows[0]["stock"] == "stock: the same reply went to 4 different comments"
    assert rows[0]["misfit"] == "misfit: the comment is a question, the reply only thanks"


def test_eval_figures_pass_replies_that_answer_from_their_passages():
    from base.prompt import PromptStyle
    from finetune.evaluation import judge, summarize

    from base.citation import DEFAULT_CITATION

    passage = [{"text": "Use a paired bootstrap: resample the rows, score both models on each resample.",
                "title": "Comparing models", "url": "https://blog.test/compare", "similarity": 0.62}]
    rows = eval_rows([("how do I compare two models fairly?", "Resample the rows with a paired bootstrap and "
                       "score both models on each resample."), ("great video!", "Thank you, glad it landed!")],
                     [passage, []], citation=DEFAULT_CITATION)
    judge(rows, ["question", "thanks"], ["other", "thanks"], PromptStyle(sign_off=SIGN_OFF))
    figures = summarize(rows, 1.0, [], PromptStyle(sign_off=SIGN_OFF))
    assert figures["stock_rate"] == 0 and figures["misfit_rate"] == 0 and figures["distinct_rate"] == 1
    assert figures["grounded_rate"] == 1.0 and rows[0]["grounded"] is True and rows[1]["grounded"] is None
    assert figures["cited_rate"] == 1.0 and rows[0]["citation"] == 'More in my post "Comparing models": https://blog.test/compare'
    assert rows[0]["reply"].endswith(f"https://blog.test/compare\n{SIGN_OFF}") and rows[1]["citation"] is None


def test_training_computes_in_bf16_only_on_cpus_with_bf16_instructions(monkeypatch):
    from engine import models
    from finetune.config import load_config

    for has_bf16, training_dtype in ((True, "bfloat16"), (False, "float32")):
        monkeypatch.setattr(models, "cpu_has_bf16", lambda has=has_bf16: has)
        assert models.choose_precision("cpu", training=True).compute_dtype == training_dtype
        assert models.choose_precision("cpu").compute_dtype == "float32"  # serving keeps its replies
    assert models.choose_precision("cpu", "float32", training=True).compute_dtype == "float32"
    assert load_config(None, [], {"data.path": "x.csv"}).model.compute_dtype == "auto"


def test_finished_run_is_not_silently_retrained(nf4_run, tiny_model_dir, pairs_csv):
    out, _ = nf4_run
    result = CliRunner().invoke(cli, tiny_args(tiny_model_dir, pairs_csv, out))
    assert result.exit_code != 0 and "already holds a finished run" in str(result.exception)


def test_merge_writes_a_16_bit_safetensors_model(nf4_run, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    out, _ = nf4_run
    merged = tmp_path / "merged"
    result = CliRunner().invoke(cli, ["merge", str(out), "--output", str(merged), "--dtype", "float16"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert list(merged.glob("*.safetensors"))
    model = AutoModelForCausalLM.from_pretrained(merged)
    assert next(model.parameters()).dtype == torch.float16
    assert not any("lora" in n for n, _ in model.named_parameters())


def test_plain_lora_run(tiny_model_dir, pairs_csv, tmp_path):
    out = tmp_path / "none"
    result = CliRunner().invoke(cli, tiny_args(tiny_model_dir, pairs_csv, out, "model.quantization=none",
                                               "train.max_steps=1", "samples.count=0"))
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "none: float weights, plain LoRA" in result.output
    assert (out / "adapter" / "adapter_model.safetensors").exists()


def test_resume_after_kill_continues_from_the_checkpoint(tiny_model_dir, pairs_csv, tmp_path):
    import torch

    out = tmp_path / "killed"
    args = tiny_args(tiny_model_dir, pairs_csv, out, "train.checkpoint_every=1", "train.epochs=200",
                     "samples.count=0")
    stderr = (tmp_path / "stderr.txt").open("w")
    proc = subprocess.Popen([sys.executable, "-c", "from finetune.cli import main; main()", *args],
                            stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        deadline = time.time() + 180
        while not (out / "checkpoints" / "last.pt").exists():
            assert proc.poll() is None and time.time() < deadline, "no checkpoint appeared"
            time.sleep(0.2)
        time.sleep(1.0)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        stderr.close()
    # Clean output: no library warning a user cannot act on (bitsandbytes' missing optional kernel,
    # torch's gemv_4bit autograd warning) by the time an eval and a training step have run.
    noise = [line for line in (tmp_path / "stderr.txt").read_text().splitlines() if "warn" in line.lower()]
    assert not noise, noise
    done = torch.load(out / "checkpoints" / "last.pt", weights_only=False)["step"]
    assert done >= 1
    result = CliRunner().invoke(cli, [*args, f"train.max_steps={done + 2}"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert f"Resumed from {out / 'checkpoints' / 'last.pt'}" in result.output
    assert f"step {done} of {done + 2}" in result.output
    steps = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in steps if r["kind"] == "step"] == list(range(1, done + 3))


BAD = {
    "missing file": (["--data", "{tmp}/nope.csv"], "does not exist"),
    "empty dataset": (["--data", "{tmp}/empty.csv"], "has no rows"),
    "wrong columns": (["--data", "{tmp}/cols.csv"], "has no a comment column"),
    "not utf-8": (["--data", "{tmp}/latin1.csv"], "line 3: bytes that are not UTF-8"),
    "unknown key": (["--data", "{good}", "lora.rnak=4"], "unknown key 'lora.rnak' (did you mean 'lora.r'?)"),
    "bad value": (["--data", "{good}", "lora.r=0"], "lora.r=0 must be at least 1"),
    "no base model": (["--data", "{good}", "--base-model", "{tmp}/no-model"], "not found"),
    "bad preset": (["--config", "nosuch", "--data", "{good}"], "config 'nosuch' not found"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_line_exit_2_and_no_output(case, tmp_path, pairs_csv):
    (tmp_path / "empty.csv").write_text("comment,reply\n")
    (tmp_path / "cols.csv").write_text("question_text,answer_text\nhi,hello\n")
    (tmp_path / "latin1.csv").write_bytes("comment,reply\nok,fine\ncaf\xe9,yes\n".encode("latin-1"))
    args, expected = BAD[case]
    args = [a.format(tmp=tmp_path, good=pairs_csv) for a in args]
    out = tmp_path / "out"
    result = cli_subprocess("run", *args, "--output", str(out), timeout=120)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and expected in lines[0], result.stderr
    assert not out.exists()


def test_estimate_shows_the_10b_arithmetic():
    import re

    result = CliRunner().invoke(cli, ["estimate", "--params", "10B"])
    assert result.exit_code == 0, result.output
    totals = [float(x) for x in re.findall(r"~([0-9.,]+)", result.output)]
    full, lora, qlora = totals
    assert 150 <= full <= 170 and 35 <= lora <= 45 and 10 <= qlora <= 13, result.output
    assert "16 bytes/param" in result.output and "160.0 GB" in result.output


def test_preview_marks_loss_tokens(tiny_model_dir, pairs_csv):
    result = CliRunner().invoke(cli, ["preview", "--data", str(pairs_csv), "--base-model", str(tiny_model_dir),
                                      "prompt.sign_off=" + SIGN_OFF, "-n", "1"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert f"«Thank you, glad it landed!\n{SIGN_OFF}<|im_end|>»" in result.output
    prompt_part = result.output.split("Comment:")[1].split("«Thank you, glad")[0]
    assert "great video!" in prompt_part and "«" not in prompt_part  # the prompt carries no loss
    assert "loss tokens (reply + EOS)" in result.output


@pytest.mark.slow
def test_demo_preset_on_the_real_model(tmp_path):
    """The demo preset on SmolLM2-135M: eval loss falls, replies end with the sign-off and are short."""
    out = tmp_path / "demo"
    result = cli_subprocess("run", "--config", "demo", "--output", str(out), timeout=1500)
    assert result.returncode == 0, result.stderr[-3000:]
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    summary = records[-1]
    assert summary["best_eval_loss"] < summary["first_eval_loss"] - 0.5
    text = (out / "samples.md").read_text()
    tuned = int(re.search(r"tuned (\d+)/(\d+)", text).group(1))
    assert tuned >= 7, text
    words = re.search(r"Mean words per reply: base ([0-9.]+), tuned ([0-9.]+)", text)
    assert float(words.group(2)) < float(words.group(1)) / 2, text  # short replies, like Nadia's


@pytest.mark.integration
def test_eval_runs_only_the_modes_asked_for(tmp_path, tiny_adapter):
    pairs = write_csv(tmp_path / "heldout.csv", PAIRS[:3])
    result = CliRunner().invoke(cli, ["eval", str(pairs), "--adapter", str(tiny_adapter), "--mode", "base",
                                      "--json"], standalone_mode=False)
    assert result.exit_code == 0, (result.output, result.exception)
    figures = json.loads(result.stdout)
    assert list(figures["modes"]) == ["base"] and {r["mode"] for r in figures["replies"]} == {"base"}
    refused = CliRunner().invoke(cli, ["eval", str(pairs), "--adapter", str(tiny_adapter), "--mode",
                                       "tuned+passages"], standalone_mode=False, env={"RESPONDER_STORE": str(tmp_path / "none")})
    assert isinstance(refused.exception, UserError) and "needs a knowledge base" in str(refused.exception)
