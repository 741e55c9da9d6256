"""Reading comment/reply pairs (CSV, JSONL, a saved `datasets` dataset) and checking them.

Reading is pure Python (no torch), so every problem in a file is reported, with line numbers,
before a model loads. Tokenization goes through `base.prompt.encode_training_example`, the
one place prompts are rendered.
"""

from __future__ import annotations

import csv
import io
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from base.errors import UserError, join_problems
from base.fileio import parse_jsonl


COMMENT_NAMES = ("comment", "comments", "comment_text", "text", "question", "input", "prompt", "instruction")
REPLY_NAMES = ("reply", "replies", "response", "answer", "output", "completion", "reply_text")


@dataclass(frozen=True)
class Pair:
    comment: str
    reply: str
    where: str  # "line 12" / "row 3": how a person finds it in the file


@dataclass
class Loaded:
    pairs: list[Pair]
    warnings: list[str]


def load_pairs(path_str: str, comment_column: str = "", reply_column: str = "") -> Loaded:
    """All pairs of a file, or one `UserError` listing every problem found in it."""
    path = Path(path_str).expanduser()
    if not path.exists():
        raise UserError(f"data file '{path_str}' does not exist; pass --data with a CSV or JSONL file "
                        "of comment/reply pairs")
    if path.is_dir():
        records, problems = _read_dataset_dir(path)
    elif path.suffix.lower() in (".jsonl", ".json", ".ndjson"):
        records, problems = _read_jsonl(path)
    else:
        records, problems = _read_csv(path)
    if problems:
        raise UserError(join_problems(f"data file '{path_str}'", problems))
    if not records:
        raise UserError(f"data file '{path_str}' has no rows; add comment/reply pairs (a header line "
                        "`comment,reply` then one pair per row)")
    return _to_pairs(path_str, records, comment_column, reply_column)


def _decode(path: Path) -> tuple[str, list[str]]:
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig"), []
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        return "", [f"line {line}: bytes that are not UTF-8 ({exc.reason}); save the file as UTF-8"]


def _read_csv(path: Path) -> tuple[list[tuple[str, dict[str, Any]]], list[str]]:
    text, problems = _decode(path)
    if problems:
        return [], problems
    reader = csv.DictReader(io.StringIO(text, newline=""))
    records = []
    try:
        start = 2
        for row in reader:
            records.append((f"line {start}", row))
            start = reader.line_num + 1
    except csv.Error as exc:
        return [], [f"line {reader.line_num}: not valid CSV ({exc})"]
    return records, []


def _read_jsonl(path: Path) -> tuple[list[tuple[str, dict[str, Any]]], list[str]]:
    text, problems = _decode(path)
    if problems:
        return [], problems
    stripped = text.lstrip()
    if stripped.startswith("["):  # a JSON array is accepted too
        try:
            items = json.loads(stripped)
        except json.JSONDecodeError as exc:
            return [], [f"not valid JSON ({exc})"]
        return [(f"item {n}", item) for n, item in enumerate(items, 1)], [
            f"item {n}: not an object" for n, item in enumerate(items, 1) if not isinstance(item, dict)]
    records = []
    for line in parse_jsonl(text):  # every problem collected, reported together by the caller
        if line.error is not None:
            problems.append(f"line {line.number}: not valid JSON ({line.error})")
        elif not isinstance(line.value, dict):
            problems.append(f"line {line.number}: not a JSON object")
        else:
            records.append((f"line {line.number}", line.value))
    return records, problems


def _read_dataset_dir(path: Path) -> tuple[list[tuple[str, dict[str, Any]]], list[str]]:
    try:
        from datasets import DatasetDict, load_from_disk

        ds = load_from_disk(str(path))
    except Exception as exc:  # noqa: BLE001 - any failure means "not a saved dataset"
        raise UserError(f"data directory '{path}' is not a dataset saved with `datasets` "
                        f"save_to_disk ({type(exc).__name__}); pass a CSV or JSONL file instead") from exc
    if isinstance(ds, DatasetDict):
        ds = ds["train"] if "train" in ds else ds[next(iter(ds))]
    return [(f"row {n}", dict(item)) for n, item in enumerate(ds, 1)], []


def _find(columns: list[str], wanted: str, names: tuple[str, ...]) -> str | None:
    lower = {c.strip().lower(): c for c in columns if isinstance(c, str)}
    if wanted:
        return lower.get(wanted.strip().lower())
    for name in names:
        if name in lower:
            return lower[name]
    return None


def _from_messages(messages: Any) -> tuple[str, str] | None:
    """(comment, reply) from chat `messages`: the first user turn and the assistant turn after it."""
    if not isinstance(messages, list):
        return None
    comment = reply = None
    for m in messages:
        if not isinstance(m, dict):
            return None
        if m.get("role") == "user" and comment is None:
            comment = m.get("content")
        elif m.get("role") == "assistant" and comment is not None:
            reply = m.get("content")
            break
    if comment is None or reply is None:
        return None
    return str(comment), str(reply)


def _to_pairs(name: str, records: list[tuple[str, dict[str, Any]]], comment_column: str,
              reply_column: str) -> Loaded:
    columns = list(records[0][1].keys())
    use_messages = not comment_column and not reply_column and "messages" in {str(c).lower() for c in columns}
    c_col = r_col = None
    if not use_messages:
        c_col = _find(columns, comment_column, COMMENT_NAMES)
        r_col = _find(columns, reply_column, REPLY_NAMES)
        missing = []
        if c_col is None:
            missing.append(f"comment column {comment_column!r}" if comment_column
                           else f"a comment column (one of {', '.join(COMMENT_NAMES[:4])})")
        if r_col is None:
            missing.append(f"reply column {reply_column!r}" if reply_column
                           else f"a reply column (one of {', '.join(REPLY_NAMES[:4])})")
        if missing:
            raise UserError(f"data file '{name}' has no {' and no '.join(missing)}; its columns are "
                            f"{', '.join(map(str, columns))}; rename them or set data.comment_column="
                            "NAME data.reply_column=NAME")
    problems: list[str] = []
    pairs: list[Pair] = []
    for where, row in records:
        if use_messages:
            msg_key = next(k for k in row if str(k).lower() == "messages")
            got = _from_messages(row.get(msg_key))
            if got is None:
                problems.append(f"{where}: messages need a user turn followed by an assistant turn")
                continue
            comment, reply = got
        else:
            comment, reply = row.get(c_col), row.get(r_col)
        empty = [what for what, v in (("comment", comment), ("reply", reply)) if v is None or not str(v).strip()]
        if empty:
            problems.append(f"{where}: empty {' and '.join(empty)}")
            continue
        pairs.append(Pair(str(comment), str(reply), where))
    if problems:
        raise UserError(join_problems(f"data file '{name}'", problems + ["fix or delete those rows"]))
    warnings = []
    seen: dict[tuple[str, str], str] = {}
    dups = []
    for p in pairs:
        key = (p.comment.strip(), p.reply.strip())
        if key in seen:
            dups.append(f"{p.where} repeats {seen[key]}")
        else:
            seen[key] = p.where
    if dups:
        warnings.append(f"{name}: {len(dups)} duplicate pair(s), kept: " + ", ".join(dups[:5])
                        + (" ..." if len(dups) > 5 else ""))
    return Loaded(pairs, warnings)


def split_pairs(pairs: list[Pair], fraction: float, seed: int) -> tuple[list[Pair], list[Pair]]:
    """A seeded train/eval split; at least one eval pair and one training pair."""
    if len(pairs) < 2:
        raise UserError(f"need at least 2 pairs to hold one out for evaluation, got {len(pairs)}; "
                        "add pairs or pass --eval-data FILE")
    order = list(range(len(pairs)))
    random.Random(seed).shuffle(order)
    n_eval = min(len(pairs) - 1, max(1, round(len(pairs) * fraction)))
    eval_idx = set(order[:n_eval])
    return ([p for i, p in enumerate(pairs) if i not in eval_idx],
            [p for i, p in enumerate(pairs) if i in eval_idx])


@dataclass
class Example:
    input_ids: list[int]
    labels: list[int]
    where: str
    comment: str
    reply: str


def encode_pairs(tokenizer: Any, style: Any, pairs: list[Pair], max_length: int,
                 passages: list[tuple] | None = None) -> tuple[list[Example], list[str]]:
    """Training examples from the one prompt module; over-long ones are cut, with a warning.

    `passages`, one tuple per pair, go into each prompt exactly as serving injects them.
    """
    from base.prompt import CommentInput, clean_comment, encode_training_example

    examples, cut = [], []
    for n, p in enumerate(pairs):
        item = CommentInput(clean_comment(p.comment), passages=tuple(passages[n]) if passages else ())
        ids, labels = encode_training_example(tokenizer, style, item, p.reply)
        if len(ids) > max_length:
            cut.append(f"{p.where} ({len(ids) - max_length} tokens cut)")
            ids, labels = ids[:max_length], labels[:max_length]
        examples.append(Example(ids, labels, p.where, p.comment, p.reply))
    warnings = []
    if cut:
        warnings.append(f"{len(cut)} example(s) longer than data.max_length={max_length} tokens are cut "
                        f"(their end, sign-off and EOS are not learned): " + ", ".join(cut[:5])
                        + (" ..." if len(cut) > 5 else ""))
    return examples, warnings
