"""Load benchmark of the responder service (continuous and static batching) against one at a time.

    .venv/bin/python benchmarks/serve_bench.py                         # nf4 and float32-merged
    .venv/bin/python benchmarks/serve_bench.py --quantization none --rounds 5 --json

For each quantization it starts the real service (`responder serve`) twice on loopback with the
default model, `--batching continuous` and `--batching static`, and loads the same model in this
process for the one-at-a-time side (one `generate` call per comment, same prompt, same decoding).
The three sides run in interleaved rounds (the order turns round each round), so a machine that
gets busier halfway cannot tilt a ratio: each ratio is the median over the rounds of that round's
ratio (its two sides ran within a minute of each other: this machine's speed drifts by 10-20% over
several minutes), and each absolute figure the median over the rounds. In a service
round, `--clients` concurrent clients send the comments over HTTP, and one more "lone" request
arrives a second in, while the batch is full: its latency is compared with the same comment's
one-at-a-time latency.

Printed side by side: replies/s, p50/p95 latency, the ratio to one at a time (goals: nf4 + LoRA
>= 5x, float32 >= 6x), continuous p50 over static p50 (goal <= 0.6 at no less throughput), the lone
request's latency ratio (goal <= 2.5x), the prompt tokens the shared-prefix cache saved, and the
floor: 2 x non-embedding parameters x (prompt tokens computed + generated tokens) / this machine's
fp32 matmul rate, the least time any method could take for what it computed, as a share of the
measured time. Token counts come from the service's /metrics. Load averages before and after.

Without --adapter, a fresh LoRA adapter (r=16 on all projections, B=0, so replies equal the base
model's) is made, so the nf4 figures include LoRA's cost and the float32 figures the merge.
Retrieval is off (`use_context: false`) and so is redrafting (`RESPONDER_REDRAFTS=0`): this
measures generation.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import queue
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import NoReturn

import httpx
from finetune_bench import matmul_rate
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
SIGN_OFF = "Keep exploring! - Nadia"
LONE = "Which camera and microphone do you record these videos with?"
console = Console(stderr=True, width=200)


def fixed_comments(n: int, data: Path | None) -> list[str]:
    """The same n comments every run (a pairs CSV's `comment` column, or a text file one per line;
    by default the sample pairs and demo comments), repeated in order if short."""
    files = [data] if data else [ROOT / "samples" / "pairs" / "train.csv", ROOT / "samples" / "demo_comments.txt"]
    fix = "pass --data with a pairs CSV (a 'comment' column) or a UTF-8 text file of comments, one per line"
    comments: list[str] = []
    for path in files:
        try:
            if path.suffix == ".csv":
                with path.open(newline="", encoding="utf-8") as f:
                    comments += [row["comment"] for row in csv.DictReader(f) if (row.get("comment") or "").strip()]
            else:
                comments += [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            fail(f"data file '{path}' cannot be read ({type(exc).__name__}); {fix}")
    if not comments:
        fail(f"no comments in {', '.join(map(str, files))}; {fix}")
    return [comments[i % len(comments)] for i in range(n)]


def fail(message: str) -> NoReturn:
    """Bad input: one line on stderr, exit code 2."""
    print(f"Error: {message}", file=sys.stderr)
    sys.exit(2)


def make_adapter(base_model: str, out: Path) -> Path:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from base.adapter_info import write_adapter_info
    from engine.models import resolve_base_model
    from base.prompt import DEFAULT_PERSONA, PromptStyle

    model = AutoModelForCausalLM.from_pretrained(resolve_base_model(base_model))
    peft_model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, task_type="CAUSAL_LM",
                                                  target_modules=["q_proj", "k_proj", "v_proj", "o_proj",
                                                                  "gate_proj", "up_proj", "down_proj"]))
    peft_model.save_pretrained(out)
    write_adapter_info(out, base_model, "nf4", PromptStyle(DEFAULT_PERSONA, SIGN_OFF))
    return out


def non_embedding_params(base_model: str) -> int:
    from transformers import AutoModelForCausalLM

    from engine.models import resolve_base_model

    model = AutoModelForCausalLM.from_pretrained(resolve_base_model(base_model))
    return sum(p.numel() for name, p in model.named_parameters() if "embed" not in name and "lm_head" not in name)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class Service:
    """`responder serve` in a child process on loopback."""

    def __init__(self, args, quantization: str, batching: str, adapter: Path, queue_size: int,
                 backend: str = "local") -> None:
        self.url = f"http://127.0.0.1:{free_port()}"
        cmd = [sys.executable, "-c", "from responder.cli import main; main()", "serve", "--backend", backend,
               "--port", self.url.rsplit(":", 1)[1], "--adapter", str(adapter), "--quantization", quantization,
               "--batching", batching, "--max-new-tokens", str(args.max_new_tokens),
               "--max-batch-size", str(args.clients), "--queue-size", str(queue_size), "--timeout", "3600",
               "--store", str(Path(tempfile.gettempdir()) / "serve-bench-no-store")]
        # Redrafting off: this measures generation, and the one-at-a-time side does not redraft.
        self.process = subprocess.Popen(cmd, start_new_session=True, stderr=subprocess.DEVNULL,
                                        env={**os.environ, "RESPONDER_REDRAFTS": "0"})

    def wait_ready(self) -> None:
        start = time.time()
        while True:
            if self.process.poll() is not None:
                raise SystemExit(f"the service exited with code {self.process.returncode}")
            try:
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.time() - start > 600:
                raise SystemExit("the service was not ready after 600 s")
            time.sleep(0.5)
        httpx.post(self.url + "/respond", json={"comment": "warm-up", "use_context": False}, timeout=3600)

    def tokens(self) -> dict[str, float]:
        text = httpx.get(self.url + "/metrics").text
        return {line.split('"')[1]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                if line.startswith("responder_tokens{")}

    def stop(self) -> None:
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)


def load_round(service: Service, comments: list[str], clients: int) -> dict:
    """`clients` clients send `comments`; a lone request arrives a second in. Figures of the round."""
    todo: queue.Queue[str] = queue.Queue()
    for c in comments:
        todo.put(c)
    latencies: list[float] = []
    failures: list[str] = []
    lone: list[float] = []

    def post(http: httpx.Client, comment: str) -> float:
        t0 = time.perf_counter()
        r = http.post(service.url + "/respond", json={"comment": comment, "use_context": False})
        if r.status_code != 200:
            failures.append(f"{r.status_code} {r.text[:100]}")
        return time.perf_counter() - t0

    def client() -> None:
        with httpx.Client(timeout=3600) as http:
            while True:
                try:
                    comment = todo.get_nowait()
                except queue.Empty:
                    return
                latencies.append(post(http, comment))

    def lone_client() -> None:
        time.sleep(1.0)
        with httpx.Client(timeout=3600) as http:
            lone.append(post(http, LONE))

    before = service.tokens()
    wall0 = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)] + [threading.Thread(target=lone_client)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - wall0
    after = service.tokens()
    tokens = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    return {"replies_s": (len(comments) + 1) / wall, "p50": percentile(latencies, 0.5),
            "p95": percentile(latencies, 0.95), "lone_s": lone[0], "wall": wall, "failures": failures,
            "computed_tokens": tokens.get("prompt_computed", 0) + tokens.get("generated", 0),
            "prompt_tokens": tokens.get("prompt", 0), "prompt_computed": tokens.get("prompt_computed", 0)}


class OneAtATime:
    """The same model in this process, one `generate` call per comment."""

    def __init__(self, args, quantization: str, adapter: Path) -> None:
        from base.prompt import CommentInput
        from base.settings import Settings
        from responder.factory import build_generator, plan_serving

        settings = Settings(adapter=adapter, quantization=quantization, max_new_tokens=args.max_new_tokens)
        self.plan = plan_serving(settings)
        self.gen = build_generator(settings, self.plan)
        self.comment = CommentInput
        self.gen.generate([CommentInput("warm-up")], self.plan.style)

    def answer(self, comment: str) -> float:
        t0 = time.perf_counter()
        self.gen.generate([self.comment(comment)], self.plan.style)  # one model.generate call, batch of 1
        return time.perf_counter() - t0

    def round(self, comments: list[str]) -> dict:
        stats = self.gen.stats
        before = stats.prompt_tokens_computed + stats.generated_tokens
        wall0 = time.perf_counter()
        latencies = [self.answer(c) for c in comments]
        wall = time.perf_counter() - wall0
        return {"replies_s": len(comments) / wall, "p50": percentile(latencies, 0.5),
                "p95": percentile(latencies, 0.95), "lone_s": self.answer(LONE), "wall": wall,
                "computed_tokens": stats.prompt_tokens_computed + stats.generated_tokens - before}


def median_of(rounds: list[dict]) -> dict:
    keys = [k for k, v in rounds[0].items() if isinstance(v, (int, float))]
    merged = {k: statistics.median(r[k] for r in rounds) for k in keys}
    merged["failures"] = [f for r in rounds for f in r.get("failures", [])]
    return merged


def bench_quantization(args, quantization: str, adapter: Path, comments: list[str]) -> dict:
    """Interleaved rounds of continuous, static and one at a time: each side's figures, per round."""
    services = {b: Service(args, quantization, b, adapter, len(comments) + 1) for b in ("continuous", "static")}
    try:
        for service in services.values():
            service.wait_ready()
        single = OneAtATime(args, quantization, adapter)
        baseline = comments[: args.baseline_comments or len(comments)]
        rounds: dict[str, list[dict]] = {"continuous": [], "static": [], "single": []}
        for n in range(args.rounds):
            order = ["continuous", "static", "single"]
            for side in order if n % 2 == 0 else order[::-1]:
                console.print(f"[bold]{quantization}[/bold] round {n + 1}/{args.rounds}: {side} ...")
                if side == "single":
                    rounds[side].append(single.round(baseline))
                else:
                    rounds[side].append(load_round(services[side], comments, args.clients))
                last = rounds[side][-1]
                console.print(f"  {last['replies_s']:.3f} replies/s, p50 {last['p50']:.1f} s, "
                              f"lone {last['lone_s']:.1f} s")
        del single
        return rounds
    finally:
        for service in services.values():
            service.stop()


def paired(a: list[dict], b: list[dict], key: str) -> float:
    """The median over the rounds of side a's figure over side b's in the same round."""
    return statistics.median(ra[key] / rb[key] for ra, rb in zip(a, b))


def summarise(rounds: dict[str, list[dict]], params: int, rate: float) -> dict:
    cont, static, single = (median_of(rounds[side]) for side in ("continuous", "static", "single"))

    def floor_share(side: dict) -> float:
        return 2 * params * side["computed_tokens"] / rate / side["wall"]

    def ratio(a: str, b: str, key: str) -> float:
        return paired(rounds[a], rounds[b], key)

    return {
        "ratio": ratio("continuous", "single", "replies_s"), "p50_s": cont["p50"], "p95_s": cont["p95"],
        "replies_per_s": cont["replies_s"], "floor_share": floor_share(cont),
        "static": {"ratio": ratio("static", "single", "replies_s"), "p50_s": static["p50"],
                   "replies_per_s": static["replies_s"], "floor_share": floor_share(static)},
        "one_at_a_time": {"replies_per_s": single["replies_s"], "p50_s": single["p50"],
                          "floor_share": floor_share(single)},
        "lone": {"continuous_s": cont["lone_s"], "static_s": static["lone_s"], "alone_s": single["lone_s"],
                 "continuous_ratio": ratio("continuous", "single", "lone_s"),
                 "static_ratio": ratio("static", "single", "lone_s")},
        "vs_static": {"p50_ratio": ratio("continuous", "static", "p50"),
                      "throughput_ratio": ratio("continuous", "static", "replies_s")},
        "prefix_cache": {"prompt_tokens": cont["prompt_tokens"], "prompt_tokens_computed": cont["prompt_computed"],
                         "saved_share": 1 - cont["prompt_computed"] / max(cont["prompt_tokens"], 1)},
        "failures": cont["failures"] + static["failures"],
    }


def print_tables(results: dict, header: str) -> None:
    goals = {"nf4": 5.0, "none": 6.0}
    table = Table(title=f"serve_bench: {header}")
    for col in ("weights", "side", "replies/s", "p50 s", "p95 s", "x one at a time", "goal", "lone request s",
                "lone / alone", "floor share"):
        table.add_column(col, justify="right")
    for q, r in results.items():
        if q in goals:
            name = "nf4 + LoRA" if q == "nf4" else "float32, merged"
            ok = "yes" if r["ratio"] >= goals[q] else "NO"
            table.add_row(name, "continuous", f"{r['replies_per_s']:.3f}", f"{r['p50_s']:.1f}", f"{r['p95_s']:.1f}",
                          f"{r['ratio']:.1f}x", f">= {goals[q]:g}x {ok}", f"{r['lone']['continuous_s']:.1f}",
                          f"{r['lone']['continuous_ratio']:.2f}x (<= 2.5 {'yes' if r['lone']['continuous_ratio'] <= 2.5 else 'NO'})",
                          f"{r['floor_share']:.0%}")
            table.add_row("", "static", f"{r['static']['replies_per_s']:.3f}", f"{r['static']['p50_s']:.1f}", "",
                          f"{r['static']['ratio']:.1f}x", "", f"{r['lone']['static_s']:.1f}",
                          f"{r['lone']['static_ratio']:.2f}x", f"{r['static']['floor_share']:.0%}")
            table.add_row("", "one at a time", f"{r['one_at_a_time']['replies_per_s']:.3f}",
                          f"{r['one_at_a_time']['p50_s']:.1f}", "", "1.0x", "", f"{r['lone']['alone_s']:.1f}", "",
                          f"{r['one_at_a_time']['floor_share']:.0%}")
    Console(width=200, stderr=True).print(table)
    for q, r in results["static_vs_continuous"].items():
        console.print(f"{q}: continuous p50 / static p50 = {r['p50_ratio']:.2f} (goal <= 0.6: "
                      f"{'yes' if r['p50_ratio'] <= 0.6 else 'NO'}), throughput continuous / static = "
                      f"{r['throughput_ratio']:.2f} (goal >= 1: {'yes' if r['throughput_ratio'] >= 1 else 'NO'}); "
                      f"prefix cache: {results[q]['prefix_cache']['prompt_tokens_computed']:.0f} of "
                      f"{results[q]['prefix_cache']['prompt_tokens']:.0f} prompt tokens computed "
                      f"({results[q]['prefix_cache']['saved_share']:.0%} saved)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quantization", choices=["nf4", "none", "both"], default="both")
    parser.add_argument("--comments", type=int, default=64)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    # 3: a median that one slow round cannot move (a continuous round varies by +-10% here, as
    # replies finish at other moments; with 2 the median is a mean, and one slow round moved p50's
    # ratio from 0.56 to 0.62)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the three sides (median)")
    parser.add_argument("--baseline-comments", type=int, default=16,
                        help="comments answered one at a time per round (it is slow on a CPU) [16]")
    parser.add_argument("--data", type=Path, default=None, help="comments: a pairs CSV or a text file, one per line")
    parser.add_argument("--adapter", type=Path, default=None)
    parser.add_argument("--base-model", default="HuggingFaceTB/SmolLM2-135M-Instruct")
    parser.add_argument("--json", action="store_true", help="standard output: one JSON object")
    args = parser.parse_args()

    load_before = os.getloadavg()
    comments = fixed_comments(args.comments, args.data)
    modes = ["nf4", "none"] if args.quantization == "both" else [args.quantization]
    rate = matmul_rate(0)
    params = non_embedding_params(args.base_model)
    results: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        adapter = args.adapter or make_adapter(args.base_model, Path(tmp) / "bench-adapter")
        for q in modes:
            results[q] = summarise(bench_quantization(args, q, adapter, comments), params, rate)
    results["static_vs_continuous"] = {q: results[q].pop("vs_static") for q in modes}
    load_after = os.getloadavg()
    results["machine"] = {"cpus": os.cpu_count(), "load_before": load_before[:3], "load_after": load_after[:3],
                          "matmul_gflops": rate / 1e9, "non_embedding_params": params, "comments": len(comments),
                          "clients": args.clients, "max_new_tokens": args.max_new_tokens, "rounds": args.rounds}
    header = (f"{len(comments)} comments + 1 lone, {args.clients} clients, {args.max_new_tokens} new tokens, "
              f"{args.rounds} interleaved rounds, {os.cpu_count()} CPUs, {rate / 1e9:.0f} GFLOP/s fp32, load average "
              f"{load_before[0]:.1f} before, {load_after[0]:.1f} after")
    print_tables(results, header)
    if args.json:
        print(json.dumps(results))


if __name__ == "__main__":
    main()
