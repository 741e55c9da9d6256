"""Load benchmark of the responder service against a one-at-a-time `model.generate` loop.

    .venv/bin/python benchmarks/serve_bench.py                      # nf4 and float32-merged
    .venv/bin/python benchmarks/serve_bench.py --quantization none --baseline-comments 16

For each quantization it starts the real service (`responder serve`) on loopback with the default
model, sends a fixed set of comments from concurrent clients over HTTP, and prints throughput
(replies/s) and p50/p95 latency; then it loads the same model in this process and answers the
comments one at a time with one `model.generate` call each (same prompt, same max_new_tokens,
same stopping), and prints the ratio. The goal is at least 5x the one-at-a-time replies/s.

Without --adapter, a fresh LoRA adapter (r=16 on all projections, B=0, so replies equal the base
model's) is made on the default model, so the nf4 figures include LoRA's cost and the float32
figures the merge. Retrieval is off on both sides (`use_context: false`): this measures generation.
The one-at-a-time loop may run on the first N comments only (--baseline-comments) because it is
slow on a CPU; its replies/s is measured, not extrapolated from anything else.
"""

from __future__ import annotations

import argparse
import csv
import os
import queue
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
SIGN_OFF = "Keep exploring! - Nadia"
console = Console(stderr=True)


def fixed_comments(n: int) -> list[str]:
    """The same n comments every run: sample pairs and demo comments, repeated in order if short."""
    comments: list[str] = []
    train = ROOT / "samples" / "pairs" / "train.csv"
    if train.exists():
        with train.open(newline="") as f:
            comments += [row["comment"] for row in csv.DictReader(f) if row.get("comment", "").strip()]
    demo = ROOT / "samples" / "demo_comments.txt"
    if demo.exists():
        comments += [line.strip() for line in demo.read_text().splitlines() if line.strip()]
    if not comments:
        comments = ["Great video!", "how big does my A/B test need to be?", "first!",
                    "when tuning xgboost do I search over the number of trees too?"]
    return [comments[i % len(comments)] for i in range(n)]


def make_adapter(base_model: str, out: Path) -> Path:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from base.adapter_info import write_adapter_info
    from base.models import resolve_base_model
    from base.prompt import DEFAULT_PERSONA, PromptStyle

    model = AutoModelForCausalLM.from_pretrained(resolve_base_model(base_model))
    peft_model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, task_type="CAUSAL_LM",
                                                  target_modules=["q_proj", "k_proj", "v_proj", "o_proj",
                                                                  "gate_proj", "up_proj", "down_proj"]))
    peft_model.save_pretrained(out)
    write_adapter_info(out, base_model, "nf4", PromptStyle(DEFAULT_PERSONA, SIGN_OFF))
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def bench_service(args, quantization: str, adapter: Path, comments: list[str]) -> dict:
    port = free_port()
    cmd = [sys.executable, "-c", "from responder.cli import main; main()", "serve", "--port", str(port),
           "--adapter", str(adapter), "--quantization", quantization, "--max-new-tokens", str(args.max_new_tokens),
           "--max-batch-size", str(args.clients), "--queue-size", str(len(comments)),
           "--timeout", "3600", "--store", str(Path(tempfile.gettempdir()) / "serve-bench-no-store")]
    server = subprocess.Popen(cmd, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        start = time.time()
        while True:
            if server.poll() is not None:
                raise SystemExit(f"the service exited with code {server.returncode}")
            try:
                if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.time() - start > 600:
                raise SystemExit("the service was not ready after 600 s")
            time.sleep(0.5)
        httpx.post(url + "/respond", json={"comment": "warm-up", "use_context": False}, timeout=3600)

        todo: queue.Queue[str] = queue.Queue()
        for c in comments:
            todo.put(c)
        latencies: list[float] = []
        failures: list[str] = []

        def client() -> None:
            with httpx.Client(timeout=3600) as http:
                while True:
                    try:
                        comment = todo.get_nowait()
                    except queue.Empty:
                        return
                    t0 = time.perf_counter()
                    r = http.post(url + "/respond", json={"comment": comment, "use_context": False})
                    latencies.append(time.perf_counter() - t0)
                    if r.status_code != 200:
                        failures.append(f"{r.status_code} {r.text[:100]}")

        wall0 = time.perf_counter()
        threads = [threading.Thread(target=client) for _ in range(args.clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - wall0
        metrics = httpx.get(url + "/metrics").text
        batches = [line for line in metrics.splitlines()
                   if line.startswith(("responder_batch_size_count", "responder_batch_size_sum"))]
        return {"replies_s": len(comments) / wall, "p50": percentile(latencies, 0.5),
                "p95": percentile(latencies, 0.95), "wall": wall, "failures": failures, "batches": batches}
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)


def bench_one_at_a_time(args, quantization: str, adapter: Path, comments: list[str]) -> dict:
    from base.prompt import CommentInput
    from base.settings import Settings
    from responder.factory import build_generator, plan_serving

    settings = Settings(adapter=adapter, quantization=quantization, max_new_tokens=args.max_new_tokens)
    plan = plan_serving(settings)
    gen = build_generator(settings, plan)
    gen.generate([CommentInput("warm-up")], plan.style)
    latencies = []
    wall0 = time.perf_counter()
    for comment in comments:
        t0 = time.perf_counter()
        gen.generate([CommentInput(comment)], plan.style)  # one model.generate call, batch of 1
        latencies.append(time.perf_counter() - t0)
    wall = time.perf_counter() - wall0
    del gen
    return {"replies_s": len(comments) / wall, "p50": percentile(latencies, 0.5),
            "p95": percentile(latencies, 0.95), "wall": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quantization", choices=["nf4", "none", "both"], default="both")
    parser.add_argument("--comments", type=int, default=64)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--baseline-comments", type=int, default=None,
                        help="Answer only the first N comments one at a time (default: all).")
    parser.add_argument("--adapter", type=Path, default=None)
    parser.add_argument("--base-model", default="HuggingFaceTB/SmolLM2-135M-Instruct")
    args = parser.parse_args()

    comments = fixed_comments(args.comments)
    baseline_comments = comments[: args.baseline_comments or len(comments)]
    modes = ["nf4", "none"] if args.quantization == "both" else [args.quantization]
    with tempfile.TemporaryDirectory() as tmp:
        adapter = args.adapter or make_adapter(args.base_model, Path(tmp) / "bench-adapter")
        rows = []
        for q in modes:
            console.print(f"[bold]{q}[/bold]: service, {len(comments)} comments from {args.clients} clients ...")
            served = bench_service(args, q, adapter, comments)
            console.print(f"  {served['replies_s']:.3f} replies/s; {served['batches']}; failures: "
                          f"{len(served['failures'])} {served['failures'][:3]}")
            console.print(f"[bold]{q}[/bold]: one at a time, {len(baseline_comments)} comments ...")
            single = bench_one_at_a_time(args, q, adapter, baseline_comments)
            console.print(f"  {single['replies_s']:.3f} replies/s")
            rows.append((q, served, single))

    load = os.getloadavg()
    table = Table(title=f"serve_bench: {len(comments)} comments, {args.clients} clients, "
                        f"{args.max_new_tokens} new tokens, {os.cpu_count()} CPUs, "
                        f"load average {load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f}")
    for col in ("weights", "service replies/s", "p50 s", "p95 s", "one-at-a-time replies/s",
                "one-at-a-time p50 s", "ratio", "goal >= 5x"):
        table.add_column(col, justify="right")
    for q, served, single in rows:
        ratio = served["replies_s"] / single["replies_s"]
        table.add_row("nf4 + LoRA" if q == "nf4" else "float32, merged", f"{served['replies_s']:.3f}",
                      f"{served['p50']:.1f}", f"{served['p95']:.1f}",
                      f"{single['replies_s']:.3f} (n={len(baseline_comments)})", f"{single['p50']:.1f}",
                      f"{ratio:.1f}x", "yes" if ratio >= 5 else "NO")
    Console(width=160).print(table)


if __name__ == "__main__":
    main()
