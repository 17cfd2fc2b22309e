"""`eval-length PATH...`, `passkey PATH...` and `probe PATH...`: what the paths name -- finished runs, sweep
directories of them, or one Hugging Face causal LM -- the HF options, declared once (``hf_options``), and the loop
over runs (``each_run``).

A path is a run directory when it holds ropebench's ``config.yaml``; a sweep directory when run directories lie
one or two levels below it (where ``ropebench.report.results.find_runs`` looks for evaluated runs); a Hugging Face
model when it is a directory with ``config.json``, or when nothing here has its name and it reads as a Hub id
(``owner/name``). A missing path that can only mean this machine (``hf_env.surely_local``) is refused by name.
Runs are evaluated one after another with the same options; a Hugging Face model on its own, into --out. Torch-free
at import: every command's ``--help`` stays fast.
"""

from __future__ import annotations

import functools
import inspect
import os
import re
from collections.abc import Callable
from pathlib import Path

import typer

from ropebench.errors import UserError, describe

PATHS_HELP = ("Finished run directories and/or sweep directories (every finished run inside is evaluated), or "
              "one Hugging Face model (a directory, or a Hub id; needs --out).")

_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
_OPTIONS = {
    "out": (Path, typer.Option(None, help="Hugging Face model: the results directory (required); plot and table "
                                          "read it like a run directory.")),
    "data": (str, typer.Option(None, help="Hugging Face model: the text, tokenized by the model's tokenizer: "
                                          "stdlib (default) or another data preset (its validation documents), or "
                                          "text given by path, scored whole -- every document, every token: "
                                          "hf:NAME_OR_PATH[:SUBSET] (a datasets source) or FILE_OR_DIR[,...].")),
    "dtype": (str, typer.Option(None, help="Hugging Face model: auto (float32 on CPU, the checkpoint's dtype on "
                                           "GPU), float32, bfloat16 or float16.")),
    "batch_size": (int, typer.Option(None, help="Hugging Face model: windows (passkey: prompts; probe: sequences) "
                                                "per forward pass (default: as many as make 8,192 tokens, at least "
                                                "one; memory grows with it and the model's width).")),
    "label": (str, typer.Option(None, help="Hugging Face model: its name in plots and tables (default: the "
                                           "directory's name or the Hub id's).")),
    "train_len": (int, typer.Option(None, help="Hugging Face model: its training context L, for the default lengths "
                                               "(multiples of L) and the cropped baseline (default: the config's "
                                               "max_position_embeddings).")),
    "trust_remote_code": (bool, typer.Option(False, "--trust-remote-code",
                                             help="Hugging Face model: run the model's own Python code.")),
}


def _is_run(path: Path) -> bool:
    from ropebench.run.rundir import RunDir

    return RunDir(path).has_config()


def runs_below(path: Path) -> list[Path]:
    """The run directories of a sweep directory, finished or not (``rundir.runs_below``, the rule ``find_runs``
    applies to evaluated runs)."""
    from ropebench.run.rundir import runs_below as below

    return below(path, _is_run)


def hf_source(path: str) -> str | None:
    """The Hugging Face model a command-line path names, or None for a run or sweep directory; anything else is
    refused, naming the path."""
    from ropebench.data.hf_env import surely_local

    local = Path(os.path.expanduser(path))
    if local.is_dir():
        if _is_run(local):
            _not_hf_results(local)
            return None
        if (local / "config.json").is_file():
            return path
        if runs_below(local):
            return None
        raise UserError(f"'{path}' is neither a ropebench run directory (no config.yaml), a sweep directory (no run "
                        "directory inside) nor a Hugging Face model (no config.json)")
    if local.exists():
        raise UserError(f"'{path}' is a file; expected a run directory, a sweep directory or a Hugging Face model")
    if surely_local(path) or not _HUB_ID.fullmatch(path):
        raise UserError(f"'{path}' does not exist; expected a run directory, a sweep directory or a Hugging Face "
                        "model directory")
    return path  # a Hub id


def _not_hf_results(path: Path) -> None:
    """Refuse the results directory of a Hugging Face model's evaluation (--out), which reads as a run directory."""
    from omegaconf import OmegaConf

    from ropebench.run.rundir import RunDir

    try:  # only the hf key is looked at here: a damaged config is said by the command that reads the run
        cfg = OmegaConf.load(RunDir(path).config_path())
    except Exception:
        return
    model = cfg.get("hf") if OmegaConf.is_dict(cfg) else None
    if model is not None:
        raise UserError(f"'{path}' holds the results of evaluating the Hugging Face model "
                        f"'{model.get('model')}', not a run; evaluate the model itself, with --out {path}")


def runs_of(paths: list[str]) -> list[Path]:
    """The runs ``paths`` name, each once: a run directory as given (its command says what is wrong with it), a
    sweep directory's finished runs -- the others are named in one line, since evaluating them could only fail."""
    from ropebench.run.rundir import RunDir

    found: dict[Path, Path] = {}  # resolved -> as given, in order
    for path in (Path(os.path.expanduser(p)) for p in paths):
        below = [path] if _is_run(path) else runs_below(path)
        finished = below if _is_run(path) else [r for r in below if RunDir(r).is_finished()]
        if not finished:
            raise UserError(f"'{path}' holds no finished run ({len(below)} run directories, none finished); "
                            "finish them first (relaunching their sweep into it resumes them)")
        if len(finished) < len(below):
            skipped = ", ".join(r.name for r in below if r not in finished)
            typer.echo(f"{path}: skipping the runs that are not finished: {skipped}", err=True)
        for run in finished:
            found.setdefault(run.resolve(), run)
    return list(found.values())


def _failed_rows(rows: list[dict]) -> bool:
    return any(r["status"].startswith("error") for r in rows)


def _attempt(evaluate: Callable[[Path], list[dict]], run: Path) -> tuple[str | None, int]:
    """(why evaluating ``run`` failed, the exit code it asks for), or (None, 0)."""
    try:
        rows = evaluate(run)
    except Exception as exc:  # a crash in one run (damaged weights, a bug) must not cost the other runs theirs
        known = describe(exc)
        if known is not None:
            return known
        lines = str(exc).strip().splitlines()
        return f"{type(exc).__name__}: {lines[0] if lines else 'no message'}", 1
    return ("a length failed; its status in the CSV says why", 1) if _failed_rows(rows) else (None, 0)


def each_run(runs: list[Path], evaluate: Callable[[Path], list[dict]]) -> None:
    """``evaluate(run)`` (it prints what it wrote and returns the rows) for each run, one after another. One run
    fails as any command does. Of several, a run that fails gets a line and the next one starts -- every length
    already evaluated stays in its CSV -- and a last line names the failed runs: exit code 2 if one was refused
    (bad input for it), else 1. A row with an error status (a length out of memory) is a failure (exit 1)."""
    if len(runs) == 1:
        if _failed_rows(evaluate(runs[0])):
            raise typer.Exit(1)
        return
    failed: dict[Path, int] = {}
    for number, run in enumerate(runs, 1):
        typer.echo(f"[{number}/{len(runs)}] {run}", err=True)
        why, code = _attempt(evaluate, run)
        if why is not None:
            typer.echo(f"failed: {run}: {why}", err=True)
            failed[run] = code
    if failed:
        typer.echo(f"error: {len(failed)} of {len(runs)} runs failed: {', '.join(map(str, failed))} (the other "
                   "runs' results are written)", err=True)
        raise typer.Exit(max(failed.values()))


def hf_options(kind: str):
    """Give `eval-length` (``kind="eval"``), `passkey` or `probe` the HF options. The command's ``run_dirs`` argument
    takes the paths as typed, and the command receives the runs they name (``runs_of``); one HF model goes to this
    module's evaluation instead, with the command's other arguments."""
    names = [n for n in _OPTIONS if kind == "eval" or n != "data"]

    def decorate(command):
        signature = inspect.signature(command)
        added = [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=_OPTIONS[n][1],
                                   annotation=_OPTIONS[n][0]) for n in names]

        @functools.wraps(command)
        def wrapper(*args, **kwargs):
            given = {n: kwargs.pop(n) for n in names}
            bound = signature.bind(*args, **kwargs)
            paths = list(bound.arguments["run_dirs"])
            models = [source for source in map(hf_source, paths) if source is not None]
            if models:
                if len(paths) > 1:
                    raise UserError(f"'{models[0]}' is a Hugging Face model: evaluate it on its own, into its own "
                                    "--out, not with other paths")
                return _evaluate(kind, models[0], given, bound.arguments)
            extra = [n for n, v in given.items() if v not in (None, False)]
            if extra:
                raise UserError(f"--{extra[0].replace('_', '-')} applies to a Hugging Face model; "
                                f"'{paths[0]}' is not one")
            if bound.arguments.get("device") is not None:
                from ropebench.run.artifacts import resolve_device

                resolve_device(bound.arguments["device"])  # once, not once per run
            bound.arguments["run_dirs"] = runs_of(paths)
            return command(*bound.args, **bound.kwargs)

        # Typer hands over the paths as typed (a Path would turn './x' into 'x'); the command gets the runs.
        typed = [p.replace(annotation=list[str]) if p.name == "run_dirs" else p for p in signature.parameters.values()]
        wrapper.__signature__ = signature.replace(parameters=[*typed, *added])
        wrapper.__annotations__ = {**command.__annotations__, "run_dirs": list[str],
                                   **{n: _OPTIONS[n][0] for n in names}}
        return wrapper

    return decorate


def _request(source: str, given: dict, device: str | None):
    from ropebench.eval.hf_session import HFRequest

    return HFRequest(source, given["out"], given.get("data"), given["dtype"] or "auto", device or "auto",
                     given.get("batch_size"), given["label"], bool(given["trust_remote_code"]),
                     given.get("train_len"))


def _evaluate(kind: str, source: str, given: dict, args: dict) -> None:
    from ropebench.eval.lengths import parse_lengths

    if given["out"] is None and not Path(os.path.expanduser(source)).exists():  # a Hub id, or a typo
        raise UserError(f"'{source}' is not a run directory, a sweep directory or a local model here (a Hugging "
                        "Face Hub id needs --out DIR and the network)")
    from ropebench.eval.runner import AS_TRAINED

    if args.get("logit_scale") not in (None, AS_TRAINED):
        raise UserError(f"--logit-scale applies to ropebench runs; '{source}' is a Hugging Face model")
    request = _request(source, given, args.get("device"))
    wanted = parse_lengths(args.get("lengths"), 1) if args.get("lengths") else None
    if kind == "eval":
        from ropebench.eval.hf_session import hf_eval_length
        from ropebench.run.rundir import EVAL_CSV

        rows = hf_eval_length(request, wanted, protocol=args.get("protocol", "nonoverlapping"),
                              stride=args.get("stride"), rope_scaling=args.get("rope_scaling"),
                              max_tokens=args.get("max_tokens"), split=args.get("split"), crop=args.get("crop"),
                              crop_stride=args.get("crop_stride"), region_len=args.get("region_len"),
                              crop_sample=args.get("crop_sample"))
        written = Path(request.out) / EVAL_CSV
    elif kind == "probe":
        from ropebench.eval import probes

        options = probes.probe_options(args.get("task"), args.get("lengths"), args.get("depths"),
                                       args.get("trials", probes.DEFAULT_TRIALS),
                                       args.get("candidates", probes.DEFAULT_CANDIDATES))
        rows = probes.hf_probe(request, rope_scaling=args.get("rope_scaling"),
                               only_missing=bool(args.get("only_missing")), **options)
        written = Path(request.out) / probes.PROBE_CSV
    else:
        from ropebench.eval import passkey as pk
        from ropebench.eval.hf_passkey import hf_passkey

        rows = hf_passkey(request, wanted, pk.parse_depths(args.get("depths")), args.get("trials", 32),
                          rope_scaling=args.get("rope_scaling"))
        echo_effective_context(rows)
        written = Path(request.out) / pk.CSV_NAME
    typer.echo(str(written))
    if _failed_rows(rows):
        raise typer.Exit(1)


def echo_effective_context(rows: list[dict]) -> None:
    """The passkey rows' effective context per label, as PI and YaRN define it, on stderr."""
    from ropebench.eval import passkey as pk

    for label, found in pk.effective_contexts(rows).items():
        text = ", ".join(f"{pk.DEFINED_BY[n]} (>= {pk.THRESHOLDS[n]:.0%}): {found[n] or 'none'}" for n in found)
        typer.echo(f"effective context [{label}] {text}", err=True)
