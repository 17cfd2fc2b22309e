"""`eval-length MODEL` and `passkey MODEL` for a Hugging Face causal LM: its options, declared once
(``hf_options``), and the choice between a run directory and a model.

The argument is a Hugging Face model when it is a directory with ``config.json`` and no ropebench
``config.yaml``, or when no such path exists and it reads as a Hub id (``owner/name``). Anything else goes to
the run-directory path unchanged, which refuses HF-only options. Torch-free at import: every command's
``--help`` stays fast.
"""

from __future__ import annotations

import functools
import inspect
import re
from pathlib import Path

import typer

from ropebench.errors import UserError

_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
_OPTIONS = {
    "out": (Path, typer.Option(None, help="Hugging Face model: the results directory (required); plot and table "
                                          "read it like a run directory.")),
    "data": (str, typer.Option(None, help="Hugging Face model: the text, tokenized by the model's tokenizer: "
                                          "stdlib (default) or another data preset, hf:NAME_OR_PATH[:SUBSET] (a "
                                          "datasets source), or FILE_OR_DIR[,...].")),
    "dtype": (str, typer.Option(None, help="Hugging Face model: auto (float32 on CPU, the checkpoint's dtype on "
                                           "GPU), float32, bfloat16 or float16.")),
    "batch_size": (int, typer.Option(None, help="Hugging Face model: windows (passkey: prompts) per forward "
                                                "pass (default 1).")),
    "label": (str, typer.Option(None, help="Hugging Face model: its name in plots and tables (default: the "
                                           "directory's name or the Hub id's).")),
    "trust_remote_code": (bool, typer.Option(False, "--trust-remote-code",
                                             help="Hugging Face model: run the model's own Python code.")),
}


def hf_source(path: Path) -> str | None:
    """The model a command-line path names, or None for a ropebench run directory (or anything else)."""
    from ropebench.run.rundir import RunDir

    if path.is_dir():
        if RunDir(path).has_config():
            return None
        if (path / "config.json").is_file():
            return str(path)
        raise UserError(f"'{path}' is neither a ropebench run directory (no config.yaml) nor a Hugging Face "
                        "model (no config.json)")
    if not path.exists() and _HUB_ID.fullmatch(str(path)):
        return str(path)
    return None


def hf_options(kind: str):
    """Give `eval-length` (``kind="eval"``) or `passkey` the HF options. The wrapped command is called for a run
    directory; an HF model goes to this module's evaluation instead, with the command's other arguments."""
    names = [n for n in _OPTIONS if kind == "eval" or n != "data"]

    def decorate(command):
        signature = inspect.signature(command)
        added = [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=_OPTIONS[n][1],
                                   annotation=_OPTIONS[n][0]) for n in names]

        @functools.wraps(command)
        def wrapper(*args, **kwargs):
            given = {n: kwargs.pop(n) for n in names}
            bound = signature.bind(*args, **kwargs)
            source = hf_source(Path(bound.arguments["run_dir"]))
            if source is None:
                extra = [n for n, v in given.items() if v not in (None, False)]
                if extra:
                    raise UserError(f"--{extra[0].replace('_', '-')} applies to a Hugging Face model; "
                                    f"'{bound.arguments['run_dir']}' is not one")
                return command(*args, **kwargs)
            return _evaluate(kind, source, given, bound.arguments)

        wrapper.__signature__ = signature.replace(parameters=[*signature.parameters.values(), *added])
        wrapper.__annotations__ = {**command.__annotations__, **{n: _OPTIONS[n][0] for n in names}}
        return wrapper

    return decorate


def _request(source: str, given: dict, device: str | None):
    from ropebench.eval.hf_session import HFRequest

    batch = given.get("batch_size")
    return HFRequest(source, given["out"], given.get("data"), given["dtype"] or "auto", device or "auto",
                     1 if batch is None else batch, given["label"], bool(given["trust_remote_code"]))


def _evaluate(kind: str, source: str, given: dict, args: dict) -> None:
    from ropebench.eval.lengths import parse_lengths

    request = _request(source, given, args.get("device"))
    wanted = parse_lengths(args.get("lengths"), 1) if args.get("lengths") else None
    if kind == "eval":
        from ropebench.eval.hf_session import hf_eval_length
        from ropebench.run.rundir import EVAL_CSV

        rows = hf_eval_length(request, wanted, protocol=args.get("protocol", "nonoverlapping"),
                              stride=args.get("stride"), rope_scaling=args.get("rope_scaling"),
                              max_tokens=args.get("max_tokens"))
        written = Path(request.out) / EVAL_CSV
    else:
        from ropebench.eval import passkey as pk
        from ropebench.eval.hf_passkey import hf_passkey

        rows = hf_passkey(request, wanted, pk.parse_depths(args.get("depths")), args.get("trials", 32),
                          rope_scaling=args.get("rope_scaling"))
        for label, found in pk.effective_contexts(rows).items():
            text = ", ".join(f"{n.upper()} (>= {pk.THRESHOLDS[n]:.0%}): {found[n] or 'none'}" for n in found)
            typer.echo(f"effective context [{label}] {text}", err=True)
        written = Path(request.out) / pk.CSV_NAME
    typer.echo(str(written))
    if any(r["status"].startswith("error") for r in rows):
        raise typer.Exit(1)
