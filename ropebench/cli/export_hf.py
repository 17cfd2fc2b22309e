"""`ropebench export-hf RUN OUT`: a finished run as a Hugging Face transformers model directory."""

from __future__ import annotations

from pathlib import Path

import typer


def export_hf(
    run_dir: Path = typer.Argument(..., help="A finished run directory (pe=rope, nope or learned)."),
    out: Path = typer.Argument(..., help="The directory to write; it must not exist or be empty."),
    force: bool = typer.Option(False, "--force", help="Replace OUT if it exists and is not empty (an earlier "
                               "export, say); a run or sweep directory is never replaced."),
):
    """Export a finished run so that transformers loads it with no ropebench import.

    AutoModelForCausalLM.from_pretrained(OUT) and AutoTokenizer.from_pretrained(OUT) then give ropebench's logits:
    RoPE and NoPE runs as GPT-NeoX, learned-position runs as GPT-2, with ropebench's byte tokenizer (ids = UTF-8
    bytes, <|endoftext|> = 256). max_position_embeddings is the training length. Needs transformers and
    tokenizers (the hf extra). Prints OUT.
    """
    from ropebench.run.export_hf import export_hf as write_export

    typer.echo(str(write_export(run_dir, out, force=force)))
