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
    from ropebench.report.plot import FigureOptions, check_style, output_paths, parse_figsize, plot_length

    choose("band", band, ("minmax", "std"))
    # Every option is checked before any result is read or model loaded: a typo costs nothing.
    opts = FigureOptions(parse_figsize(figsize) if figsize is not None else None, title,
                         check_style(style) if style is not None else None, Renames.parse(label, labels))
    if not by_position and (length is not None or smooth != 1):
        raise UserError("--length and --smooth apply to --by-position only")
    if relative and (by_position or passkey):
        raise UserError("--relative applies to the perplexity figure, not to --by-position or --passkey")
    output_paths(out, "ropebench")
    if paths and str(paths[0]) == "decay":
        from ropebench.report.decay import plot_run_decay

        written = plot_run_decay(paths[1:], out, head_dim, base, max_distance, opts)
    elif passkey:
        from ropebench.report.plot_passkey import plot_passkey

        written = plot_passkey(paths, out, opts)
    elif by_position:
        from ropebench.report.positions import plot_positions

        written = plot_positions(paths, out, protocol=protocol, length=length, smooth=smooth, opts=opts)
    else:
        written = plot_length(paths, out, protocol=protocol, band=band, opts=opts, relative=relative)
    for path in written:
        typer.echo(str(path))


def table(
    paths: list[Path] = typer.Argument(..., help="Run directories and/or sweep directories."),
    lengths: str = typer.Option(None, help="Comma-separated lengths (default: all evaluated)."),
    format: str = typer.Option("md", "--format", help="md, csv or latex."),
    protocol: str = typer.Option("nonoverlapping", help="Which protocol's rows to tabulate."),
    label: list[str] = typer.Option(None, "--label", help=LABEL_HELP),
    labels: Path = typer.Option(None, "--labels", help=LABELS_HELP),
):
    """The perplexity table: one row per experiment by evaluation length, mean ± std across seeds."""
    from ropebench.errors import choose
    from ropebench.report.identity import Renames
    from ropebench.report.table import perplexity_table

    choose("format", format, ("md", "csv", "latex"))
    renames = Renames.parse(label, labels)
    wanted = None
    if lengths:
        from ropebench.eval.lengths import parse_lengths

        wanted = parse_lengths(lengths, 1)
    typer.echo(perplexity_table(paths, lengths=wanted, fmt=format, protocol=protocol, renames=renames))
