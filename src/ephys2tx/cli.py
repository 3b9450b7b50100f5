"""Command-line interface. It parses arguments and calls library functions; no logic lives here.

Bad input (:class:`ephys2tx.errors.InputError`) prints one line and exits with code 2.
"""

from __future__ import annotations

import errno
import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Optional

import click
import typer
from rich.console import Console
from rich.markup import escape

from ephys2tx import __version__
from ephys2tx.cli_commands.options import parse_path
from ephys2tx.errors import InputError
from ephys2tx.safety import check_output_dir, interrupts_raise, release_claims

app = typer.Typer(
    name="ephys2tx",
    help="Predict the transcriptomic subclass (Lamp5, Pvalb, Sst, Vip) of GABAergic interneurons "
         "from patch-clamp electrophysiology, in mouse and human.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console(stderr=True)

#: Bounds of the numeric options (data-dependent limits, e.g. cells per class >= folds, are
#: checked by the library before any fit).
MAX_SPLITS = 100
MAX_REPEATS = 100
MAX_JOBS = 256
MAX_SEED = 2**32 - 1

DataDirOption = Annotated[
    Optional[Path],
    typer.Option("--data-dir", help="Data directory (default: $EPHYS2TX_DATA, else the user cache).",
                 show_default=False, parser=parse_path),
]


def _progress():
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeElapsedColumn)

    return Progress(TextColumn("[progress.description]{task.description}"), BarColumn(),
                    MofNCompleteColumn(), TimeElapsedColumn(), console=console, transient=False,
                    disable=not console.is_terminal)


@app.command()
def run(
    data_dir: DataDirOption = None,
    out: Annotated[Path, typer.Option("--out", help="Results folder to create (checked before the run starts).", parser=parse_path)] = Path("results"),
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace --out if it is a results folder written by ephys2tx run.")] = False,
    quick: Annotated[bool, typer.Option("--quick", help="A fast look: one repeat of 2 folds, each model family once, fewer trees and epochs, donor-grouped folds for human cells only, a reduced shift benchmark.")] = False,
    species: Annotated[Optional[list[str]], typer.Option("--species", help="mouse, human and/or mouse_5class (Sncg as a fifth class; repeatable).")] = None,
    models: Annotated[Optional[list[str]], typer.Option("--model", help="Model names (repeatable; default: all).")] = None,
    n_splits: Annotated[Optional[int], typer.Option(min=2, max=MAX_SPLITS, help="Folds per repeat (default 5; 2 with --quick).")] = None,
    n_repeats: Annotated[Optional[int], typer.Option(min=1, max=MAX_REPEATS, help="Repeats (default 3; 1 with --quick).")] = None,
    seed: Annotated[int, typer.Option(min=0, max=MAX_SEED, help="Seed of folds, models and bootstraps.")] = 0,
    jobs: Annotated[int, typer.Option("--jobs", min=1, max=MAX_JOBS, help="Folds fitted in parallel (worker processes; at most the CPU cores and the folds to fit).")] = 2,
    verify: Annotated[bool, typer.Option("--verify/--no-verify", help="Check the data files' sha256.")] = True,
    features: Annotated[Optional[Path], typer.Option(
        "--features", help="Study a table from `ephys2tx extract` instead of a shared table.", parser=parse_path)] = None,
    labels: Annotated[Optional[Path], typer.Option(
        "--labels", help="Labels of --features: a table with id and subclass columns.", parser=parse_path)] = None,
    label_column: Annotated[Optional[str], typer.Option(
        "--label-column", help="Label column of --labels (or of --features itself).")] = None,
    cache_dir: Annotated[Optional[Path], typer.Option(
        "--cache-dir", help="Fold-fit cache (default: $EPHYS2TX_FOLD_CACHE, else the user cache).",
        show_default=False, parser=parse_path)] = None,
    no_cache: Annotated[bool, typer.Option(
        "--no-cache", help="Fit every fold, reading and writing no cache.")] = False,
) -> None:
    """Run the whole study on the real data and write metrics.json, figures and report.md."""
    from ephys2tx.evaluation.fold_cache import open_fold_cache
    from ephys2tx.report.writer import (results_markdown_table, transfer_comparison_markdown,
                                        write_results)
    from ephys2tx.study import STUDY_OUTPUT_KIND, StudyConfig, run_study, study_inputs


    overrides = dict(data_dir=None if data_dir is None else str(data_dir), seed=seed,
                     verify=verify, n_jobs=jobs)
    if n_splits is not None:
        overrides["n_splits"] = n_splits
    overrides.update(feature_table=None if features is None else str(features),
                     label_column=label_column, label_table=None if labels is None else str(labels))
    if species:
        overrides["species"] = tuple(species)
    if models:
        overrides["models"] = tuple(models)
    if n_repeats is not None:
        overrides["n_repeats"] = n_repeats
    config = StudyConfig.quick_config(**overrides) if quick else StudyConfig(**overrides)
    inputs = study_inputs(config)
    check_output_dir(out, kind=STUDY_OUTPUT_KIND, overwrite=overwrite, inputs=inputs)
    cache = open_fold_cache(cache_dir, enabled=not no_cache, out_dir=out, inputs=inputs)
    with _progress() as bar:
        task = bar.add_task("loading data", total=None)

        def progress(description: str, done: int, total: int) -> None:
            bar.update(task, description=description, completed=done, total=total)

        result = run_study(config, progress=progress, cache=cache)
    path = write_results(result, out, overwrite=overwrite)
    for line in result.unknown_label_notes():
        console.print(line, highlight=False, markup=False, soft_wrap=True)
    typer.echo(results_markdown_table(result))
    transfer = transfer_comparison_markdown(result)
    if transfer:
        typer.echo("\n" + transfer)
    if result.shift is not None:
        from ephys2tx.report.shift_report import benchmark_table

        typer.echo("\n" + benchmark_table(result.shift).to_markdown(index=False))
    totals = result.warning_totals()
    if totals:
        console.print(f"note: library warnings during the study ({', '.join(f'{n} {c}' for c, n in totals.items())}) "
                      "are counted per model in report.md (Library warnings) and metrics.json",
                      highlight=False, soft_wrap=True, markup=False)
    console.print(f"[green]wrote[/green] {path}/report.md, metrics.json and figures "
                  f"in {result.seconds:.0f} s")
    if cache is not None:
        console.print(f"fold cache {cache.directory}: {cache.hits} fold(s) reused, "
                      f"{cache.misses} fitted", highlight=False)


@app.command()
def fetch(
    data_dir: DataDirOption = None,
    dataset: Annotated[Optional[list[str]], typer.Option("--dataset", help="Dataset name (repeatable; default: all).")] = None,
    mirror: Annotated[Optional[str], typer.Option(help="Base URL of a mirror of the data folder.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Download even if a verified copy exists.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace data files whose content differs from the published ones.")] = False,
    dandiset: Annotated[Optional[str], typer.Option(
        "--dandiset", help="Download the raw NWB files of --cells from this DANDI dandiset (e.g. 000020) instead.")] = None,
    cells: Annotated[Optional[list[str]], typer.Option(
        "--cells", help="With --dandiset: cell ids, comma-separated (repeatable).")] = None,
    nwb_dir: Annotated[Path, typer.Option(
        "--nwb-dir", help="With --dandiset: folder for the <cell id>.nwb files.", parser=parse_path)] = Path("nwb"),
) -> None:
    """Download the public data files into the data directory and verify their sha256."""
    if dandiset is not None:
        from ephys2tx.cli_commands.extract import fetch_dandi

        fetch_dandi(dandiset, cells or [], nwb_dir)
        return
    if cells:
        raise InputError("--cells needs --dandiset (the DANDI dandiset to fetch the cells from).")
    from ephys2tx.data.fetch import fetch_datasets
    from ephys2tx.data.paths import resolve_data_dir

    root = resolve_data_dir(data_dir)
    with _progress() as bar:
        task = bar.add_task("fetching", total=None)
        records = fetch_datasets(
            root, dataset, mirror=mirror, force=force, overwrite=overwrite,
            on_file=lambda spec: bar.update(task, description=spec.relpath),
            on_bytes=lambda n: bar.advance(task, n))
    for rec in records:
        console.print(f"{rec.status:>10}  {rec.relpath}  sha256 ok")
    console.print(f"data directory: {root}")


@app.command()
def datasets(
    data_dir: DataDirOption = None,
    verify: Annotated[bool, typer.Option("--verify/--no-verify", help="Check the data files' sha256.")] = True,
) -> None:
    """Load every dataset and print its QC steps, cell counts and classes."""
    from ephys2tx.data.datasets import LOADERS, load_dataset

    out = Console()
    loaded = {name: load_dataset(name, data_dir, verify=verify) for name in LOADERS}  # all, then print:
    for name, ds in loaded.items():  # a bad file of the last dataset leaves nothing half-printed
        out.print(f"[bold]{name}[/bold] ({ds.species}): {ds.n_cells} cells, "
                  f"{ds.features.shape[1]} features in {len(ds.families)} families; {ds.class_counts()}")
        for step in ds.qc_report:
            out.print(f"   {step['step']}: {step['n_before']} -> {step['n_after']} {step['detail']}")


@app.command()
def harmonise(
    data_dir: DataDirOption = None,
    verify: Annotated[bool, typer.Option("--verify/--no-verify", help="Check the data files' sha256.")] = True,
) -> None:
    """Verify the mouse -> human feature mapping on the cells present in both mouse tables."""
    from ephys2tx.features.harmonise import bridge_verification, verification_markdown

    typer.echo(verification_markdown(bridge_verification(data_dir, verify=verify)))


def _register_commands() -> None:
    """Commands whose functions live in :mod:`ephys2tx.cli_commands` (one module each)."""
    from ephys2tx.cli_commands.extract import extract_command
    from ephys2tx.cli_commands.features import features_command
    from ephys2tx.cli_commands.map import map_command
    from ephys2tx.cli_commands.predict import predict_command
    from ephys2tx.cli_commands.train import train_command

    app.command("train")(train_command)
    app.command("predict")(predict_command)
    app.command("map")(map_command)
    app.command("extract")(extract_command)
    app.command("features")(features_command)


_register_commands()


@app.callback(invoke_without_command=True)
def _root(version: Annotated[bool, typer.Option("--version", help="Print the version.")] = False) -> None:
    if version:
        typer.echo(f"ephys2tx {__version__}")
        raise typer.Exit()


def _error_line(message: str) -> None:
    _say(f"[red]error:[/red] {escape(' '.join(str(message).split()))}")


def _say(markup: str) -> None:
    """Print one line on stderr; if stderr is closed or full, nothing can be shown (the exit code
    still tells)."""
    try:
        console.print(markup, highlight=False, soft_wrap=True)
    except OSError:  # a closed pipe (`2>&1 | head`), a full disk (`2>/dev/full`)
        _closed_output()


#: Exit code after the reader of the output went away (``ephys2tx ... | head -1``): 128 + SIGPIPE,
#: what a shell reports for a Unix tool ended by that signal.
EXIT_CLOSED_PIPE = 128 + 13


def _pipe_closed(fd: int) -> bool:
    """Whether ``fd`` is a pipe (or socket) whose reading end has been closed."""
    import select

    try:
        poller = select.poll()
        poller.register(fd, select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (OSError, ValueError, AttributeError):  # no such descriptor, no poll on this platform
        return False


def _closed_output() -> bool:
    """Point the standard streams whose reader went away at /dev/null; whether there was one.

    Python flushes the standard streams at exit: a closed pipe would fail once
    more there ("Exception ignored ... BrokenPipeError"), see the note on
    SIGPIPE in the documentation of :mod:`signal`.
    """
    closed = [fd for fd in (1, 2) if _pipe_closed(fd)]
    if closed:
        devnull = os.open(os.devnull, os.O_WRONLY)
        for fd in closed:
            os.dup2(devnull, fd)
        os.close(devnull)
    return bool(closed)


@contextmanager
def _broken_pipes_raise() -> Iterator[None]:
    """Let rich's consoles raise :class:`BrokenPipeError` on a closed pipe, as ``print`` does.

    rich ends the program at once with exit code 1 (``Console.on_broken_pipe``,
    its documented hook); :func:`_invoke` ends it quietly instead.
    """
    from rich.console import Console as RichConsole

    previous = RichConsole.on_broken_pipe

    def on_broken_pipe(self) -> None:
        self.quiet = True
        raise BrokenPipeError(errno.EPIPE, os.strerror(errno.EPIPE))

    RichConsole.on_broken_pipe = on_broken_pipe
    try:
        yield
    finally:
        RichConsole.on_broken_pipe = previous


def _run_app(argv: list[str] | None):
    """The command's return value (click's context and invoke, without typer's ``main``).

    typer's ``main`` turns any EPIPE, also a network one, into a silent exit
    with code 1 and wraps the standard streams; :func:`_invoke` handles every
    exception itself.
    """
    command = typer.main.get_command(app)
    args = list(sys.argv[1:] if argv is None else argv)
    with command.make_context("ephys2tx", args) as ctx:
        rv = command.invoke(ctx)
        if sys.stdout is not None:  # None when started with stdout closed (`>&-`)
            sys.stdout.flush()  # a closed pipe is found here, not in the interpreter's exit
    return rv


def _invoke(argv: list[str] | None) -> int:
    """Run the command; every failure becomes one line on stderr and an exit code."""
    try:
        rv = _run_app(argv)
    except InputError as exc:
        _error_line(str(exc))
        return 2
    except (click.exceptions.Exit, typer.Exit) as exc:
        return exc.exit_code
    except (click.exceptions.Abort, typer.Abort, EOFError):
        return 130
    except (click.ClickException, typer.TyperException) as exc:  # typer >= 0.2x vendors click
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        ctx = getattr(exc, "ctx", None)
        if not message.strip():  # no arguments at all: the help is shown, the error has no text
            message = "no command given; choose one of the commands listed above"
        where = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
        _error_line(f"{message}{where}")
        return 2
    except KeyboardInterrupt:
        return 130
    except OSError as exc:  # the environment: disk full, permissions, a vanished file
        if exc.errno == errno.EPIPE and _closed_output():  # `ephys2tx ... | head -1`
            return EXIT_CLOSED_PIPE
        if os.environ.get("EPHYS2TX_DEBUG"):
            raise
        target = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        _error_line(f"{exc.strerror or exc}{target}; check the path, its permissions and the free "
                    "disk space, then run the command again.")
        return 2
    except Exception as exc:  # a bug: one line, the traceback only on request
        if os.environ.get("EPHYS2TX_DEBUG"):
            raise
        first = str(exc).splitlines()[0] if str(exc) else ""
        _error_line(f"internal error ({type(exc).__name__}: {first}); nothing was written. Please "
                    "report it, with the traceback shown by EPHYS2TX_DEBUG=1.")
        return 1
    return rv if isinstance(rv, int) and not isinstance(rv, bool) else 0


def _quiet_resource_trackers() -> None:
    """Keep the worker pools' resource trackers from warning after an interrupt.

    A run interrupted while its fold workers hold semaphores ends with the trackers (child
    processes, which read ``PYTHONWARNINGS``) warning about "leaked" semaphores that they then
    clean up; the warning would follow the one ``aborted`` line.
    """
    rules = [f"ignore::UserWarning:{module}" for module in
             ("joblib.externals.loky.backend.resource_tracker", "multiprocessing.resource_tracker")]
    current = [r for r in os.environ.get("PYTHONWARNINGS", "").split(",") if r]
    os.environ["PYTHONWARNINGS"] = ",".join(current + [r for r in rules if r not in current])


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point; returns the exit code.

    0 success; 2 bad input or environment (one ``error:`` line, nothing
    written); 130 after Ctrl-C and 143 after SIGTERM (``aborted``; staged
    outputs are removed, the targets are left as they were); 141 when the
    reader of the output went away (``ephys2tx ... | head -1``: nothing more is
    shown, no error); 1 an internal error (one line; ``EPHYS2TX_DEBUG=1`` shows
    the traceback).
    """
    _quiet_resource_trackers()
    with interrupts_raise() as received, _broken_pipes_raise():
        try:
            try:
                code = _invoke(argv)
            finally:
                release_claims()  # the output locations this command claimed
        except KeyboardInterrupt:  # a signal during the error report or the release itself
            code = 130
    signum = received["signum"]
    if signum is not None or code == 130:
        name = "" if signum in (None, signal.SIGINT) else f" ({signal.Signals(signum).name})"
        _say(f"aborted{name}")
        return 128 + int(signum or signal.SIGINT)
    return code


def console_main() -> None:
    """Console-script entry point: :func:`main`, then exit without finalising the interpreter.

    Every output is written, renamed and closed by then; the exit handlers
    (:mod:`atexit`: temporary folders, logging) still run and the standard
    streams are flushed. Only the teardown of modules and objects is skipped:
    about a second after a large ``predict``, for nothing. While a thread or a
    child process is alive (the worker pools of ``run``: they shut down in
    threading's exit, before :mod:`atexit`), the interpreter exits normally.
    """
    code = main()
    import threading

    mp = sys.modules.get("multiprocessing")
    if threading.active_count() > 1 or (mp is not None and mp.active_children()):
        sys.exit(code)
    import atexit

    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:  # None: the stream was closed when the program started
                stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more can be shown
            pass
    os._exit(code)


if __name__ == "__main__":  # pragma: no cover
    console_main()
