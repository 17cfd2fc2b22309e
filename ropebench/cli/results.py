"""`ropebench plot` and `ropebench table`: figures and tables of finished runs' results (registered in
cli/app.py). Torch-free at import; each command imports what it draws with."""

from __future__ import annotations

from pathlib import Path

import typer

from ropebench.errors import UserError

LABEL_HELP = ("Rename a series: KEY=NAME, KEY being its label as printed or one of its run directories (split at the "
              "last '='); repeatable.")
LABELS_HELP = "A YAML file of KEY: NAME lines, as --label."


def plot(
    paths: list[Path] = typer.Argument(..., help="Run and/or sweep directories; or `decay [RUN_DIR]`."),
    out: Path = typer.Option(Path("ropebench.png"), help="Output file: .png (a .pdf is written beside it), .pdf "
                             "or .svg; a directory gets a default file name."),
    protocol: str = typer.Option("nonoverlapping", help="Which protocol's rows to draw."),
    by_position: bool = typer.Option(False, "--by-position", help="Loss against token position instead."),
    passkey: bool = typer.Option(False, "--passkey", help="Passkey accuracy heatmaps (length x depth)."),
    probe: bool = typer.Option(False, "--probe", help="Retrieval-probe heatmaps (length x depth), chance in each."),
    probe_task: str = typer.Option(None, help="--probe: only this probe task."),
    task: bool = typer.Option(False, "--task", help="Task exact match against instance length (eval_task.csv), "
                              "a panel per task."),
    gain: bool = typer.Option(False, "--gain", help="The gain from context past the training length (cropped "
                              "minus full NLL) against length, with a zero line."),
    split: str = typer.Option(None, help="test or val (default: test where the runs have it)."),
    relative: bool = typer.Option(False, "--relative", help="Perplexity divided by each run's own at its training "
                                  "length (curves start at 1)."),
    band: str = typer.Option("minmax", help="Across seeds: minmax or std."),
    label: list[str] = typer.Option(None, "--label", help=LABEL_HELP),
    labels: Path = typer.Option(None, "--labels", help=LABELS_HELP),
    figsize: str = typer.Option(None, help="Figure size W,H in inches, e.g. 7,4.2."),
    title: str = typer.Option(None, help='Figure title instead of the default one; "" for none.'),
    style: str = typer.Option(None, help="A matplotlib style name, e.g. seaborn-v0_8-paper."),
    length: int = typer.Option(None, help="--by-position: the evaluation length to draw (default: each "
                               "label's longest)."),
    smooth: int = typer.Option(1, help="--by-position: moving average over this many position buckets (1: none)."),
    head_dim: int = typer.Option(None, help="decay: RoPE head dimension (default: the run's, else 128)."),
    base: float = typer.Option(None, help="decay: RoPE base (default: the run's, else 10000)."),
    max_distance: int = typer.Option(None, help="decay: largest relative distance (default 16x train length)."),
):
    """Perplexity against evaluation length, one line per experiment (mean and band across seeds).

    `ropebench plot decay [RUN_DIR]` draws RoFormer's long-term-decay bound instead, and with a RoPE run the
    measured mean attention score against relative distance.
    """
    from ropebench.errors import choose
    from ropebench.report.identity import Renames
    from ropebench.report.plot import FigureOptions, check_style, output_paths, parse_figsize

    choose("band", band, ("minmax", "std"))
    # Every option is checked before any result is read or model loaded: a typo costs nothing.
    opts = FigureOptions(parse_figsize(figsize) if figsize is not None else None, title,
                         check_style(style) if style is not None else None, Renames.parse(label, labels))
    _check_figure_options(by_position, length, smooth, relative, passkey or probe or probe_task or task or gain,
                          task and opts.renames)
    output_paths(out, "ropebench")
    written = _draw(paths, out, opts, protocol=protocol, band=band, split=split, heatmaps=(passkey, probe, probe_task),
                    task=task, by_position=by_position, gain=gain, relative=relative, length=length, smooth=smooth,
                    decay=(head_dim, base, max_distance))
    for path in written:
        typer.echo(str(path))


def _draw(paths: list[Path], out: Path, opts, *, protocol: str, band: str, split: str | None, heatmaps: tuple,
          task: bool, by_position: bool, gain: bool, relative: bool, length: int | None, smooth: int,
          decay: tuple) -> list[Path]:
    """The figure asked for, saved; returns the written paths."""
    if paths and str(paths[0]) == "decay":
        from ropebench.report.decay import plot_run_decay

        return plot_run_decay(paths[1:], out, *decay, opts)
    elif any(heatmaps):
        from ropebench.cli.probe import plot_heatmaps

        return plot_heatmaps(paths, out, opts, *heatmaps)
    elif task:
        from ropebench.report.tasks import plot_tasks

        return plot_tasks(paths, out, band=band, opts=opts)
    elif by_position:
        from ropebench.report.positions import plot_positions

        return plot_positions(paths, out, protocol=protocol, length=length, smooth=smooth, opts=opts)
    elif gain:
        from ropebench.report.plot_gain import plot_gain

        return plot_gain(paths, out, protocol=protocol, band=band, opts=opts, split=split)
    else:
        from ropebench.report.plot import plot_length

        return plot_length(paths, out, protocol=protocol, band=band, opts=opts, relative=relative, split=split)


def _check_figure_options(by_position: bool, length: int | None, smooth: int, relative: bool, other_figure: bool,
                          renamed_tasks: bool) -> None:
    """The options that apply to one figure only, refused with any other (``other_figure``: the passkey, probe,
    task or gain figure asked for)."""
    if not by_position and (length is not None or smooth != 1):
        raise UserError("--length and --smooth apply to --by-position only")
    if relative and (by_position or other_figure):
        raise UserError("--relative applies to the perplexity figure, not to --by-position, --passkey, --probe, "
                        "--task or --gain")
    if renamed_tasks:
        raise UserError("--label/--labels apply to the perplexity, passkey and probe figures, not to --task")


def table(
    paths: list[Path] = typer.Argument(..., help="Run directories and/or sweep directories."),
    lengths: str = typer.Option(None, help="Comma-separated lengths (default: all evaluated)."),
    format: str = typer.Option("md", "--format", help="md, csv or latex."),
    protocol: str = typer.Option("nonoverlapping", help="Which protocol's rows to tabulate."),
    metric: str = typer.Option("ppl", help="ppl (perplexity), gain (cropped minus full NLL, nats/token: > 0 when the "
                               "context past L helps), gain_source (cut to an extended run's source length), hold or "
                               "use (one length per run), probe (retrieval-probe accuracy by task, beside chance)."),
    split: str = typer.Option(None, help="test or val (default: test where the runs have it)."),
    task: bool = typer.Option(False, "--task", help="Task exact match by instance length (eval_task.csv), a "
                              "table per task, and the mean rank across tasks."),
    label: list[str] = typer.Option(None, "--label", help=LABEL_HELP),
    labels: Path = typer.Option(None, "--labels", help=LABELS_HELP),
):
    """The result table: one row per experiment by evaluation length, mean ± std across seeds (one seed: ± standard
    error over documents); `--task`: task accuracy."""
    from ropebench.errors import choose
    from ropebench.report.identity import Renames
    from ropebench.report.table import METRICS, perplexity_table

    choose("format", format, ("md", "csv", "latex"))
    renames = Renames.parse(label, labels)
    if task:
        from ropebench.report.tasks import task_table

        if lengths:
            raise UserError("--lengths applies to perplexity tables; a task table shows every evaluated bucket")
        if renames:
            raise UserError("--label/--labels apply to perplexity and probe tables, not to --task")
        typer.echo(task_table(paths, fmt=format))
        return
    choose("metric", metric, (*METRICS, "probe"))
    wanted = None
    if lengths:
        from ropebench.eval.lengths import parse_lengths

        wanted = parse_lengths(lengths, 1)
    if metric == "probe":
        from ropebench.report.probes import probe_table

        return typer.echo(probe_table(paths, lengths=wanted, fmt=format, renames=renames))
    typer.echo(perplexity_table(paths, lengths=wanted, fmt=format, protocol=protocol, metric=metric, split=split,
                                renames=renames))
