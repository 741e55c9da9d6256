"""Hostile inputs and a flood against a real `responder serve` on loopback (issue 11).

    .venv/bin/python benchmarks/hostile_bench.py              # every case, then the flood, then SIGTERM
    .venv/bin/python benchmarks/hostile_bench.py --no-flood   # the cases only

Setup, all with the real CLIs: `ingest samples/articles --store DIR` (a temporary store), then
`responder serve --quantization none` (the embedded default model, SmolLM2-135M-Instruct, in
float32: the faster choice on a CPU) as a subprocess on a free loopback port, with an API key.
Every other setting is the default (1 MiB bodies, 3,072-token comments, a replies queue of 64,
a /retrieve queue of 8, max_new_tokens 96).

Prints a table (case | expected | got | ok), one row per case of the issue: auth, body size, batch
cap, model tokens, lone surrogates, invisible characters, /retrieve's own queue, paths, the replies
CSV (`responder batch --server` into a .csv), ingest (lock, reader failure, symlinks, a 2 MB line),
the Docker health check, and last, SIGTERM with requests queued.

Then the flood: 16 normal clients send 4 on-topic comments each (POST /respond, one after another)
alone, then again while 8 flood clients alternate POST /retrieve (an on-topic comment) and a
1.5 MB POST /respond. Goal: flooded p95 <= 1.25x quiet, throughput >= 0.8x quiet, 64/64 answered
200. Load averages are printed before and after: on a shared machine, read the figures with them.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
PY = sys.executable
KEY = "bench-" + os.urandom(8).hex()
AUTH = {"Authorization": f"Bearer {KEY}"}
ON_TOPIC = [json.loads(line)["comment"] for line in (ROOT / "samples" / "retrieval_questions.jsonl").open()
            if line.strip()][:16]


def cli(*args: str, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """`ingest ...` or `responder ...` in a child process, as a user runs it."""
    module = "ingest.cli" if args[0] == "ingest" else "responder.cli"
    argv = list(args[1:]) if args[0] == "ingest" else list(args)
    merged = {**os.environ, "COLUMNS": "200", **(env or {})}
    return subprocess.run([PY, "-c", f"from {module} import main; main()", *argv], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env={k: v for k, v in merged.items() if v is not None})


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`responder serve` in a child process; `stop()` sends SIGTERM."""

    def __init__(self, store: Path, *args: str, env: dict | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)
        cmd = [PY, "-c", "from responder.cli import main; main()", "serve", "--port", str(self.port),
               "--store", str(store), *args]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT,
                                     env={**os.environ, **(env or {})})

    def wait_ready(self, timeout: float = 300) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None:
                raise SystemExit(f"responder serve exited: {Path(self.log.name).read_text()[-2000:]}")
            time.sleep(0.3)
        raise SystemExit("responder serve was not ready in time")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=120)


# ------------------------------------------------------------------------------------------ cases


@dataclass
class Case:
    name: str
    expected: str
    run: Callable[[], tuple[str, bool]]


@dataclass
class Results:
    rows: list[tuple[str, str, str, bool]] = field(default_factory=list)
    bodies: list[str] = field(default_factory=list)  # every response body, checked for paths at the end

    def add(self, case: Case) -> None:
        try:
            got, ok = case.run()
        except Exception as exc:  # noqa: BLE001 - a case that crashes is a failed case, the run goes on
            got, ok = f"crashed: {type(exc).__name__}: {str(exc)[:120]}", False
        self.rows.append((case.name, case.expected, got, ok))
        print(f"{'ok  ' if ok else 'FAIL'} {case.name}: {got}", flush=True)


def status_detail(r: httpx.Response, results: Results) -> str:
    results.bodies.append(r.text)
    try:
        detail = r.json().get("detail", "") if isinstance(r.json(), dict) else ""
    except ValueError:
        detail = r.text[:80]
    return f"{r.status_code} {detail}".strip()[:160]


def post(url: str, results: Results, body: bytes | None = None, data=None, headers=None, **kw) -> str:
    headers = {**AUTH, **(headers or {})} if headers is not False else {}
    if body is not None:
        r = httpx.post(url, content=body, headers={"content-type": "application/json", **headers}, timeout=300, **kw)
    else:
        r = httpx.post(url, json=data, headers=headers, timeout=300, **kw)
    return status_detail(r, results)


def startup_cases(store: Path) -> list[Case]:
    def blank() -> tuple[str, bool]:
        out = cli("serve", "--port", str(free_port()), "--store", str(store), env={"RESPONDER_API_KEY": "  "})
        return f"exit {out.returncode}: {out.stderr.strip()[:90]}", out.returncode == 2 and "blank" in out.stderr

    def public() -> tuple[str, bool]:
        out = cli("serve", "--host", "0.0.0.0", "--port", str(free_port()), "--store", str(store),
                  env={"RESPONDER_API_KEY": None})
        return f"exit {out.returncode}: {out.stderr.strip()[:90]}", out.returncode == 2 and "refusing" in out.stderr

    def allowed() -> tuple[str, bool]:
        srv = Server(store, "--host", "0.0.0.0", "--allow-no-auth", "--backend", "openai",
                     "--openai-base-url", f"http://127.0.0.1:{free_port()}/v1")
        try:
            deadline = time.time() + 60
            while time.time() < deadline:
                try:
                    return f"healthz {httpx.get(srv.url + '/healthz', timeout=2).status_code}", True
                except httpx.HTTPError:
                    time.sleep(0.3)
            return "did not start", False
        finally:
            srv.stop()

    return [Case("blank RESPONDER_API_KEY", "startup error, exit 2", blank),
            Case("0.0.0.0 without a key", "refused, exit 2", public),
            Case("0.0.0.0 with --allow-no-auth", "starts", allowed)]


def auth_cases(url: str, results: Results) -> list[Case]:
    def no_key() -> tuple[str, bool]:
        got = [status_detail(httpx.request(m, url + p, json={"comment": "hi"} if m == "POST" else None), results)
               for m, p in (("POST", "/respond"), ("GET", "/docs"), ("GET", "/openapi.json"), ("GET", "/metrics"))]
        return ", ".join(g[:3] for g in got), all(g.startswith("401") for g in got)

    def health() -> tuple[str, bool]:
        r = httpx.get(url + "/healthz")
        results.bodies.append(r.text)
        leaks = [s for s in ("/tmp", "/home", str(ROOT), "Error", "Traceback") if s in r.text]
        return f"{r.status_code} {r.text[:70]}...", r.status_code == 200 and not leaks

    def ready() -> tuple[str, bool]:
        r = httpx.get(url + "/readyz")
        return f"{r.status_code} {r.text}", r.status_code == 200

    return [Case("no key: /respond, /docs, /openapi.json, /metrics", "401 each", no_key),
            Case("/healthz without a key", "200, no paths or exception text", health),
            Case("/readyz without a key", "200", ready)]


def body_cases(url: str, results: Results) -> list[Case]:
    three_mb = b'{"comment": "' + b"a" * 3_000_000 + b'"}'

    def chunked() -> tuple[str, bool]:
        pieces = [three_mb[i:i + 65536] for i in range(0, len(three_mb), 65536)]
        got = post(url + "/respond", results, body=iter(pieces))
        return got, got.startswith("413")

    def case(name: str, expected: str, prefix: str, **kw) -> Case:
        def run() -> tuple[str, bool]:
            got = post(url + kw.pop("path", "/respond"), results, **kw)
            return got, got.startswith(prefix)
        return Case(name, expected, run)

    many = [{"comment": "x"}] * 100_000
    return [case("3 MB body", "413 before parsing", "413", body=three_mb),
            case("3 MB body, no key", "413 (before auth)", "413", body=three_mb, headers=False),
            Case("3 MB chunked body (no Content-Length)", "413 as it streams", chunked),
            case("/respond/batch of 100,000 items", "413", "413", path="/respond/batch", data=many),
            case("/respond/batch of 65 invalid items", "413 item cap before validation", "413 batch has 65",
                 path="/respond/batch", data=[{"comment": ""}] * 65)]


def token_cases(url: str, results: Results) -> list[Case]:
    def case(name: str, expected: str, prefix: str, comment: str | None = None, body: bytes | None = None,
             data=None) -> Case:
        def run() -> tuple[str, bool]:
            got = post(url + "/respond", results, body=body, data=data or {"comment": comment})
            return got, got.startswith(prefix)
        return Case(name, expected, run)

    tag = "\U000E0041"
    return [case("10,000 emoji", "422 (30,000 model tokens)", "422 body.comment: comment is 30000 model",
                 "\U0001F600" * 10_000),
            case("10,000 tag characters only", "422 empty after cleaning", "422 body.comment: comment is empty",
                 tag * 10_000),
            case("9,000 x U+FB2C (27,000 chars after NFC)", "422 not 400", "422 body.comment: comment is 36000",
                 "\ufb2c" * 9000),
            case("'hi' + 9,000 hidden tag characters", "200 (hidden text removed)", "200", "hi" + tag * 9000),
            case("lone surrogate in comment", "422", "422 body.comment: comment contains a lone surrogate",
                 body=b'{"comment": "hi \\ud800"}'),
            case("lone surrogate in author", "422", "422 body.author", body=b'{"comment": "hi", "author": "\\udfff"}'),
            case("lone surrogate in video_title", "422", "422 body.video_title",
                 body=b'{"comment": "hi", "video_title": "\\ud83d"}'),
            case("invalid UTF-8 body", "422", "422 body: not UTF-8", body='{"comment": "caf\u00e9"}'.encode("latin-1"))]


def isolation_cases(url: str, results: Results) -> list[Case]:
    def neighbours() -> tuple[str, bool]:
        with ThreadPoolExecutor(2) as pool:
            good = pool.submit(post, url + "/respond", results, data={"comment": ON_TOPIC[0]})
            bad = pool.submit(post, url + "/respond", results, body=b'{"comment": "\\ud800 boom"}')
            got = (good.result()[:3], bad.result()[:3])
        return f"good {got[0]}, bad {got[1]}", got == ("200", "422")

    def retrieve_flood() -> tuple[str, bool]:
        with ThreadPoolExecutor(41) as pool:
            reply = pool.submit(post, url + "/respond", results, data={"comment": ON_TOPIC[1]})
            burst = [pool.submit(post, url + "/retrieve", results, data={"comment": ON_TOPIC[n % 16]})
                     for n in range(40)]
            codes = [f.result()[:3] for f in burst]
            answered = reply.result()[:3]
        summary = f"/retrieve {codes.count('200')}x200 {codes.count('503')}x503; /respond {answered}"
        return summary, answered == "200" and codes.count("503") > 0 and set(codes) <= {"200", "503"}

    def sources() -> tuple[str, bool]:
        r = httpx.post(url + "/retrieve", json={"comment": ON_TOPIC[2]}, headers=AUTH, timeout=60)
        results.bodies.append(r.text)
        found = [p["source"] for p in r.json()["passages"]]
        return f"{r.status_code} {found[:2]}", bool(found) and not any(s.startswith("/") for s in found)

    return [Case("good and lone-surrogate comments at once", "200 and 422", neighbours),
            Case("40 concurrent /retrieve + 1 /respond", "some 503 from /retrieve's own queue; /respond 200",
                 retrieve_flood),
            Case("passage sources", "relative paths", sources)]


def csv_case(url: str, tmp: Path) -> Case:
    def run() -> tuple[str, bool]:
        from responder.jobs.drafts import Drafts

        thread = json.loads((ROOT / "samples/youtube/commentThreads.json").read_text())["items"][0]
        snippet = thread["snippet"]["topLevelComment"]["snippet"]
        texts = ['=HYPERLINK("http://evil.test","win") how big should my A/B test be?', "@sam +1, great video"]
        items = []
        for n, text in enumerate(texts):
            item = json.loads(json.dumps(thread))
            item["id"] = item["snippet"]["topLevelComment"]["id"] = f"Ugx-formula{n}"
            item["snippet"]["topLevelComment"]["snippet"] = {**snippet, "textOriginal": text, "textDisplay": text,
                                                             "authorDisplayName": f"-author{n}"}
            items.append(item)
        (tmp / "formulas.json").write_text(json.dumps({"items": items}))
        out = cli("batch", str(tmp / "formulas.json"), "--server", url, "-o", str(tmp / "replies.csv"),
                  env={"RESPONDER_API_KEY": KEY})
        raw = (tmp / "replies.csv").read_text()
        back = {r["comment_id"]: r for r in Drafts(tmp / "replies.csv").load()}
        round_trip = [back[f"Ugx-formula{n}"]["comment"] for n in range(2)] == texts
        neutral = "\n=HYPERLINK" not in raw and ",=HYPERLINK" not in raw and "'=HYPERLINK" in raw
        return f"exit {out.returncode}; cells neutralised {neutral}; read back as written {round_trip}", \
            out.returncode == 0 and neutral and round_trip

    return Case("replies CSV with =HYPERLINK / @ / - cells", "neutralised in the file, original when read", run)


_CRASHING_READER = """
import sys
from ingest import pipeline
real = pipeline.read_document
def read(path, data):
    if path.name.startswith("kmeans"):
        raise IndexError("list index out of range")
    return real(path, data)
pipeline.read_document = read
from ingest.cli import main
main()
"""


def ingest_cases(store: Path, tmp: Path) -> list[Case]:
    def beside_server() -> tuple[str, bool]:
        out = cli("ingest", str(ROOT / "samples/articles"), "--store", str(store))
        return f"exit {out.returncode}: {out.stderr.strip()[:100]}...", \
            out.returncode == 2 and "--chroma-url" in out.stderr

    def second_ingest() -> tuple[str, bool]:
        from base.settings import Settings
        from knowledge.store import lock_store

        with lock_store(Settings(store=tmp / "other-store"), exclusive=True):
            out = cli("ingest", str(ROOT / "samples/articles"), "--store", str(tmp / "other-store"))
        return f"exit {out.returncode}", out.returncode == 2 and "--chroma-url" in out.stderr

    def reader_crash() -> tuple[str, bool]:
        import shutil

        articles = Path(shutil.copytree(ROOT / "samples/articles", tmp / "articles"))
        first = cli("ingest", str(articles), "--store", str(tmp / "s2"))
        (articles / "pandas-groupby-performance.md").unlink()
        (articles / "kmeans-choosing-k.md").write_text((articles / "kmeans-choosing-k.md").read_text() + "\nMore.\n")
        out = subprocess.run([PY, "-c", _CRASHING_READER, str(articles), "--store", str(tmp / "s2")],
                             capture_output=True, text=True, cwd=ROOT, env={**os.environ, "COLUMNS": "200"})
        ok = first.returncode == out.returncode == 0 and "the reader failed (IndexError" in out.stdout
        removed = [line.replace("│", " ").split() for line in out.stdout.splitlines() if "removed" in line]
        count = removed[0][-1] if removed else "?"
        return f"exit {out.returncode}; skipped with its reason; removed {count}", ok and count == "1"

    def symlink_and_long_line() -> tuple[str, bool]:
        site, outside = tmp / "site", tmp / "private"
        site.mkdir()
        outside.mkdir()
        (outside / "secret.md").write_text("# Secret\n\nhunter2")
        (site / "leak.md").symlink_to(outside / "secret.md")
        (site / "bundle.md").write_text("# Bundle\n\n```js\n" + "a" * 2_000_000 + "\n```\n")
        out = cli("ingest", str(site), "--store", str(tmp / "s3"))
        from base.settings import Settings
        from knowledge.store import open_knowledge_base

        docs = open_knowledge_base(Settings(store=tmp / "s3")).collection().get(include=["documents"])["documents"]
        longest = max(len(d) for d in docs)
        skipped = "outside the folders given" in out.stdout
        return f"exit {out.returncode}; symlink skipped {skipped}; {len(docs)} chunks, longest {longest} chars", \
            out.returncode == 0 and skipped and longest <= 2000 and not any("hunter2" in d for d in docs)

    return [Case("ingest while serve has the store", "refused, points to --chroma-url", beside_server),
            Case("second ingest on a locked store", "refused", second_ingest),
            Case("a reader raises on one file", "that file skipped with its reason; prune still runs", reader_crash),
            Case("symlink out of the folder + a 2 MB one-word line", "skipped; chunks <= 2000 chars",
                 symlink_and_long_line)]


def docker_case() -> Case:
    def run() -> tuple[str, bool]:
        import re

        check = re.search(r"^HEALTHCHECK(?:.*\\\n)*.*$", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
        path = next((p for p in ("/readyz", "/healthz") if check and p in check.group(0)), "none")
        return f"HEALTHCHECK on {path}", path == "/readyz"
    return Case("Docker HEALTHCHECK", "uses /readyz", run)


def no_paths_case(results: Results, tmp: Path) -> Case:
    def run() -> tuple[str, bool]:
        leaks = [b[:80] for b in results.bodies if str(tmp) in b or str(ROOT) in b or str(Path.home()) + "/" in b]
        return f"{len(results.bodies)} responses, {len(leaks)} with a path", not leaks
    return Case("no absolute path in any response", "none", run)


# ------------------------------------------------------------------------------------------ flood


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def normal_clients(url: str) -> tuple[list[float], list[int], float]:
    """16 clients x 4 on-topic comments, one after another: (latencies, statuses, wall seconds)."""
    latencies: list[float] = []
    statuses: list[int] = []
    lock = threading.Lock()

    def client(n: int) -> None:
        with httpx.Client(headers=AUTH, timeout=600) as http:
            for k in range(4):
                start = time.perf_counter()
                r = http.post(url + "/respond", json={"comment": ON_TOPIC[(n + 4 * k) % len(ON_TOPIC)]})
                with lock:
                    latencies.append(time.perf_counter() - start)
                    statuses.append(r.status_code)

    start = time.perf_counter()
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(client, range(16)))
    return latencies, statuses, time.perf_counter() - start


def flood_client(url: str, auth: dict, stop, counts: dict, lock: threading.Lock, n: int) -> None:
    big = b'{"comment": "' + b"a" * 1_500_000 + b'"}'
    with httpx.Client(headers=auth, timeout=60) as http:
        k = 0
        while not stop.is_set():
            try:
                if k % 2 == 0:
                    r = http.post(url + "/retrieve", json={"comment": ON_TOPIC[(n + k) % len(ON_TOPIC)]})
                    key = f"/retrieve {r.status_code}"
                else:
                    r = http.post(url + "/respond", content=big, headers={"content-type": "application/json"})
                    key = f"/respond 1.5 MB {r.status_code}"
            except httpx.HTTPError as exc:
                key = f"{type(exc).__name__}"
            with lock:
                counts[key] = counts.get(key, 0) + 1
            k += 1


def flood_process(url: str, auth: dict, stop, out) -> None:
    """8 flood clients, with the API key (the worst case: past the key check), in their own process
    (an attacker shares no interpreter with the victims' clients); counts go to `out` after `stop`."""
    lock, counts = threading.Lock(), {}
    threads = [threading.Thread(target=flood_client, args=(url, auth, stop, counts, lock, n)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.put(counts)


def batches(url: str) -> tuple[float, float]:
    """(reply batches so far, comments in them) from the service's own metrics."""
    text = httpx.get(url + "/metrics", headers=AUTH).text
    values = {line.split()[0]: float(line.split()[1]) for line in text.splitlines()
              if line.startswith(("responder_batch_size_count", "responder_batch_size_sum"))}
    return values.get("responder_batch_size_count", 0.0), values.get("responder_batch_size_sum", 0.0)


def flood(url: str) -> dict:
    import multiprocessing

    print("load average before:", os.getloadavg(), flush=True)
    before = batches(url)
    quiet = normal_clients(url)  # the cases before have warmed the model up
    middle = batches(url)
    ctx = multiprocessing.get_context("spawn")
    stop, out = ctx.Event(), ctx.Queue()
    flooder = ctx.Process(target=flood_process, args=(url, AUTH, stop, out))
    flooder.start()
    time.sleep(2)  # the flood is running when the normal clients start
    start = time.perf_counter()
    flooded = normal_clients(url)
    stop.set()
    counts = out.get(timeout=120)
    flooder.join(timeout=60)
    flood_s = time.perf_counter() - start + 2
    after = batches(url)
    print("load average after:", os.getloadavg(), flush=True)
    return {"quiet": quiet, "flooded": flooded, "flood_counts": counts, "flood_s": flood_s,
            "batches": [(middle[0] - before[0], middle[1] - before[1]), (after[0] - middle[0], after[1] - middle[1])]}


def print_flood(figures: dict) -> bool:
    (ql, qs, qw), (fl, fs, fw) = figures["quiet"], figures["flooded"]
    q95, f95 = percentile(ql, 0.95), percentile(fl, 0.95)
    qt, ft = len(ql) / qw, len(fl) / fw
    print(f"\nquiet:   p50 {percentile(ql, 0.5):6.1f} s  p95 {q95:6.1f} s  {qt:.2f} replies/s  "
          f"({qw:.1f} s, {qs.count(200)}/64 answered 200)")
    print(f"flooded: p50 {percentile(fl, 0.5):6.1f} s  p95 {f95:6.1f} s  {ft:.2f} replies/s  "
          f"({fw:.1f} s, {fs.count(200)}/64 answered 200)")
    (qb, qc), (fb, fc) = figures["batches"]
    print(f"reply lane (responder_batch_size: decoding steps when continuous, batches when static): quiet "
          f"{qb:.0f} for {qc:.0f} rows, flooded {fb:.0f} for {fc:.0f} rows")
    total = sum(figures["flood_counts"].values())
    print(f"flood: {total} requests in {figures['flood_s']:.0f} s: {json.dumps(figures['flood_counts'])}")
    p95_ok, tput_ok, all_ok = f95 <= 1.25 * q95, ft >= 0.8 * qt, fs.count(200) == qs.count(200) == 64
    print(f"goal p95 flooded/quiet {f95 / q95:.2f} (<= 1.25): {'ok' if p95_ok else 'MISSED'}; "
          f"throughput {ft / qt:.2f} (>= 0.8): {'ok' if tput_ok else 'MISSED'}; all 64 answered 200: "
          f"{'ok' if all_ok else 'MISSED'}")
    return p95_ok and tput_ok and all_ok


# --------------------------------------------------------------------------------------- shutdown


def sigterm_case(srv: Server, results: Results) -> Case:
    def run() -> tuple[str, bool]:
        with ThreadPoolExecutor(40) as pool:
            pending = [pool.submit(post, srv.url + "/respond", results, data={"comment": ON_TOPIC[n % 16]})
                       for n in range(40)]
            time.sleep(1.5)
            start = time.perf_counter()
            srv.proc.send_signal(signal.SIGTERM)
            codes = []
            for f in pending:
                try:
                    codes.append(f.result()[:3])
                except httpx.HTTPError as exc:
                    codes.append(type(exc).__name__)
        code = srv.proc.wait(timeout=120)
        took = time.perf_counter() - start
        other = len(codes) - codes.count("200") - codes.count("503")
        got = f"{codes.count('200')}x200, {codes.count('503')}x503, {other} other; exit {code} after {took:.1f} s"
        return got, other == 0
    return Case("SIGTERM with 40 requests queued", "each answered 200 or 503 within the 8 s grace", run)


def print_table(results: Results) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table("case", "expected", "got", "", show_lines=False, expand=True)
    for name, expected, got, ok in results.rows:
        table.add_row(name, expected, got, "[green]ok[/green]" if ok else "[red]FAIL[/red]")
    Console(width=200).print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-flood", action="store_true", help="Run the cases only.")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="hostile-"))
    store = tmp / "store"
    out = cli("ingest", str(ROOT / "samples/articles"), "--store", str(store))
    if out.returncode != 0:
        raise SystemExit(out.stderr)
    results = Results()
    for case in startup_cases(store):
        results.add(case)
    srv = Server(store, "--quantization", "none", env={"RESPONDER_API_KEY": KEY})
    srv.wait_ready()
    for group in (auth_cases(srv.url, results), body_cases(srv.url, results), token_cases(srv.url, results),
                  isolation_cases(srv.url, results), [csv_case(srv.url, tmp)], ingest_cases(store, tmp),
                  [docker_case(), no_paths_case(results, tmp)]):
        for case in group:
            results.add(case)
    figures = None if args.no_flood else flood(srv.url)
    results.add(sigterm_case(srv, results))
    print_table(results)
    goals = print_flood(figures) if figures else True
    failed = [row[0] for row in results.rows if not row[3]]
    print(f"\n{len(results.rows) - len(failed)}/{len(results.rows)} cases as expected" +
          (f"; failed: {failed}" if failed else ""))
    raise SystemExit(0 if not failed and goals else 1)


if __name__ == "__main__":
    main()
