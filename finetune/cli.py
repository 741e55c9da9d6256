"""`finetune`: train the style adapter (QLoRA), preview data, estimate memory, merge.

Heavy libraries (torch, transformers, peft, bitsandbytes) are imported inside the commands, after
the config and the data have been checked, so `--help` and bad input answer at once.
"""

from __future__ import annotations

import statistics
from pathlib import Path

import click

from base.clikit import run, setup_logging
from base.errors import UserError
from finetune.eval_command import eval_cmd


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Train a LoRA style adapter on past comment/reply pairs (QLoRA: 4-bit NF4 base)."""
    setup_logging()


def _console():
    from rich.console import Console

    return Console(highlight=False, soft_wrap=True)  # log lines stay whole (paths, grep)


def _config_options(func):
    for option in reversed([
        click.option("--config", "-c", "config", default=None, metavar="FILE_OR_PRESET",
                     help="YAML config or preset name (default, demo); key=value arguments override it."),
        click.option("--data", default=None, metavar="FILE",
                     help="Training pairs: CSV, JSONL or a saved `datasets` dataset [data.path]."),
        click.option("--eval-data", default=None, metavar="FILE",
                     help="Held-out pairs for eval loss and samples.md [data.eval_path]; "
                          "default: a seeded split of --data."),
        click.option("--base-model", default=None, metavar="ID_OR_PATH",
                     help="Base model: local directory, hub id in the local cache, or smollm2 [model.base_model]."),
    ]):
        func = option(func)
    return click.argument("overrides", nargs=-1, metavar="[KEY=VALUE]...")(func)


def _flags(data, eval_data, base_model, output=None, epochs=None, store=None, chroma_url=None) -> dict:
    return {"data.path": data, "data.eval_path": eval_data, "model.base_model": base_model,
            "output": output, "train.epochs": epochs, "context.store": store, "context.chroma_url": chroma_url}


@cli.command("run")
@_config_options
@click.option("--output", "-o", default=None, metavar="DIR", help="Output directory [output].")
@click.option("--epochs", type=int, default=None, help="Number of epochs [train.epochs].")
@click.option("--store", default=None, metavar="DIR",
              help="Knowledge base (as `ingest --store`): train with the passages serving would inject "
                   "(context-aware training) [context.store].")
@click.option("--chroma-url", default=None, metavar="URL", help="A Chroma server instead of --store [context.chroma_url].")
@click.option("--fresh", is_flag=True, help="Ignore a checkpoint in the output directory and start over.")
@click.option("--stop-after-steps", type=int, default=None, hidden=True,
              help="Save a checkpoint and stop after N optimizer steps (to test resuming).")
@click.option("-v", "--verbose", is_flag=True, help="Log details.")
def run_cmd(config, data, eval_data, base_model, overrides, output, epochs, store, chroma_url, fresh,
            stop_after_steps, verbose):
    """Train the style adapter; resumes automatically from OUTPUT/checkpoints.

    \b
    Examples:
      finetune run --config demo
      finetune run --data pairs.csv --output runs/mine --store ~/blog/chroma
      finetune run --data pairs.csv --output runs/mine lora.r=16 train.learning_rate=1e-4
    """
    from .config import load_config
    from .trainer import prepare, train

    setup_logging(verbose)
    cfg = load_config(config, overrides, _flags(data, eval_data, base_model, output, epochs, store, chroma_url))
    prep = prepare(cfg, fresh=fresh)  # data, base model and output dir checked before torch loads
    train(prep, _console(), fresh=fresh, stop_after_steps=stop_after_steps)


@cli.command("preview")
@_config_options
@click.option("-n", "--examples", default=3, show_default=True, help="Examples to render.")
def preview_cmd(config, data, eval_data, base_model, overrides, examples):
    """Token-length statistics and examples with the loss-carrying tokens marked «like this»."""
    from rich.table import Table

    from engine.models import load_tokenizer, resolve_base_model

    from .config import load_config
    from .data import encode_pairs, load_pairs

    cfg = load_config(config, overrides, _flags(data, eval_data, base_model))
    loaded = load_pairs(cfg.data.path, cfg.data.comment_column, cfg.data.reply_column)
    tokenizer = load_tokenizer(resolve_base_model(cfg.model.base_model))
    style = cfg.prompt.style
    encoded, warnings = encode_pairs(tokenizer, style, loaded.pairs, 10**9)  # measure uncut lengths
    console = _console()
    for w in loaded.warnings:
        console.print(f"[yellow]Warning:[/yellow] {w}")
    lengths = [len(e.input_ids) for e in encoded]
    replies = [sum(1 for x in e.labels if x != -100) for e in encoded]
    over = [(e.where, n - cfg.data.max_length) for e, n in zip(encoded, lengths) if n > cfg.data.max_length]
    table = Table(title=f"{cfg.data.path}: {len(encoded)} examples, tokens per example")
    for col in ("", "min", "median", "p90", "max", "mean"):
        table.add_column(col, justify="right")
    for name, values in (("whole example", lengths), ("loss tokens (reply + EOS)", replies),
                         ("prompt (masked)", [a - b for a, b in zip(lengths, replies)])):
        s = sorted(values)
        table.add_row(name, str(s[0]), f"{statistics.median(s):g}", str(s[int(0.9 * (len(s) - 1))]), str(s[-1]),
                      f"{statistics.mean(s):.1f}")
    console.print(table)
    share = sum(replies) / max(1, sum(lengths))
    console.print(f"Loss is taken on {share:.0%} of the tokens; data.max_length={cfg.data.max_length}: "
                  + (f"{len(over)} example(s) would be cut ({', '.join(f'{w}: {n} tokens' for w, n in over[:5])})"
                     if over else "nothing is cut"))
    console.print("Text between « and » carries loss (the reply, the sign-off and the end-of-turn token).")
    for e in encoded[:examples]:
        console.rule(e.where)
        console.print(render_marked(tokenizer, e.input_ids, e.labels), markup=False)


def render_marked(tokenizer, ids: list[int], labels: list[int]) -> str:
    """The decoded example with each run of loss-carrying tokens wrapped in « »."""
    out, run_ids, in_loss = [], [], False
    for tok, lab in zip(ids + [None], labels + [-100]):
        carries = lab != -100
        if tok is None or carries != in_loss:
            text = tokenizer.decode(run_ids, skip_special_tokens=False) if run_ids else ""
            out.append(f"«{text}»" if in_loss and text else text)
            run_ids, in_loss = [], carries
        if tok is not None:
            run_ids.append(tok)
    return "".join(out)


@cli.command("estimate")
@click.option("--params", default=None, metavar="N", help="Parameter count, such as 7B, 10B or 135M.")
@click.option("--model", "model_path", default=None, metavar="PATH", help="A model directory (reads config.json).")
@click.option("--rank", default=64, show_default=True, help="LoRA rank (on every linear layer).")
@click.option("--batch", default=4, show_default=True, help="Micro-batch size.")
@click.option("--seq-len", default=512, show_default=True, help="Tokens per example.")
def estimate_cmd(params, model_path, rank, batch, seq_len):
    """Memory for full fine-tuning, LoRA and QLoRA: weights, gradients, optimizer, adapter, activations."""
    from rich.table import Table

    from .estimate import gb, guess_shape, parse_params, shape_from_model, table

    if bool(params) == bool(model_path):
        raise UserError("pass exactly one of --params (such as 10B) or --model PATH")
    if rank < 1 or batch < 1 or seq_len < 1:
        raise UserError("--rank, --batch and --seq-len must be at least 1")
    if model_path:
        from engine.models import resolve_base_model

        shape = shape_from_model(resolve_base_model(model_path))
    else:
        shape = guess_shape(parse_params(params))
    rows = table(shape, rank, batch, seq_len)
    from rich.console import Console

    console = Console(highlight=False, width=max(100, _console().width))  # the table never truncates
    p = shape.params
    t = Table(title=f"{p / 1e9:,.2f}B parameters (hidden {shape.hidden}, {shape.layers} layers), "
                    f"batch {batch} x {seq_len} tokens, GB")
    for col in ("method", "weights", "gradients", "optimizer", "adapter", "activations", "total"):
        t.add_column(col, justify="left" if col == "method" else "right", no_wrap=True)
    for r in rows:
        t.add_row(r.method, gb(r.weights), gb(r.gradients), gb(r.optimizer), gb(r.adapter), gb(r.activations),
                  f"[bold]~{gb(r.total)}[/bold]")
    console.print(t)
    click.echo(
        f"Full: 2 (weights) + 2 (gradients) + 4 (fp32 master) + 8 (Adam moments) = 16 bytes/param x "
        f"{p / 1e9:,.2f}B = {gb(16 * p)} GB.\n"
        f"LoRA: 2 bytes/param x {p / 1e9:,.2f}B = {gb(2 * p)} GB of frozen 16-bit weights, + the adapter's "
        f"own state, + activations kept for backward.\n"
        f"QLoRA: NF4 with double quantization is 4.127 bits (0.52 bytes)/param = {gb(p * 4.127 / 8)} GB, "
        f"+ 16-bit embeddings, + the adapter, + activations with gradient checkpointing.\n"
        f"Full fine-tuning is shown with gradient checkpointing (any 10B full fine-tune needs it), LoRA "
        f"without (the usual LoRA tutorial), QLoRA with (the QLoRA recipe).")


@cli.command("merge")
@click.argument("adapter", metavar="RUN_OR_ADAPTER_DIR")
@click.option("--output", "-o", required=True, metavar="DIR", help="Where to write the merged model.")
@click.option("--dtype", type=click.Choice(["bfloat16", "float16"]), default="bfloat16", show_default=True,
              help="16-bit type of the merged weights.")
@click.option("--base-model", default=None, metavar="ID_OR_PATH",
              help="Base model (default: the one recorded with the adapter).")
@click.option("--force", is_flag=True, help="Replace an existing output directory.")
def merge_cmd(adapter, output, dtype, base_model, force):
    """Merge the adapter into a 16-bit copy of the base model (never the 4-bit weights); safetensors."""
    from base.adapter_info import read_adapter_info
    from engine.models import resolve_base_model

    from .merge import merge

    info = read_adapter_info(adapter)
    base_dir = resolve_base_model(base_model or info.base_model)
    out = Path(output).expanduser()
    if out.exists() and any(out.iterdir()) and not force:
        raise UserError(f"output '{out}' is not empty; pass --force to replace it or choose another --output")
    merge(info, base_dir, out, dtype)
    click.echo(f"Merged {info.path} into a {dtype} copy of {base_model or info.base_model}: {out}")


@cli.command("export")
@click.argument("adapter", metavar="RUN_OR_ADAPTER_DIR")
@click.option("--output", "-o", default=None, metavar="DIR",
              help="Where to write adapter.gguf (and merged.gguf) [default: the adapter's folder, where "
                   "`responder serve --backend llama.cpp` looks].")
@click.option("--merged", is_flag=True, help="Also merge the adapter into a 16-bit copy of the base model "
                                             "and write it as one GGUF (merged.gguf).")
@click.option("--outtype", type=click.Choice(["f16", "bf16", "f32", "q8_0"]), default="f16", show_default=True,
              help="Number type of the written tensors.")
@click.option("--base-model", default=None, metavar="ID_OR_PATH",
              help="Base model (default: the one recorded with the adapter).")
def export_cmd(adapter, output, merged, outtype, base_model):
    """Write the adapter as a llama.cpp LoRA file (and the merged model as a GGUF) with llama.cpp's converters."""
    from base.adapter_info import read_adapter_info
    from engine.models import resolve_base_model

    from .export import export

    info = read_adapter_info(adapter)
    out = Path(output).expanduser() if output else info.path
    out.mkdir(parents=True, exist_ok=True)
    for path in export(info, resolve_base_model(base_model or info.base_model), out, merged, outtype):
        click.echo(f"Wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
    click.echo(f"Serve it: responder serve --backend llama.cpp --adapter {info.path}")


cli.add_command(eval_cmd)


def main() -> None:
    run(cli)
