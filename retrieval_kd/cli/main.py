"""``rkd``: the retrieval-kd command line. Errors print as one line and exit with status 2."""

from __future__ import annotations

import os
import sys

import typer
from rich.markup import escape

from retrieval_kd.cli import (
    bench_cmd,
    data_cmd,
    eval_cmd,
    index_cmd,
    models_cmd,
    queries_cmd,
    retrieve_cmd,
    run_cmd,
    score_cmd,
    train_cmd,
    verify_cmd,
)
from retrieval_kd.errors import RkdError
from retrieval_kd.locks import WAIT_ENV
from retrieval_kd.progress import console
from retrieval_kd.redact import redact
from retrieval_kd.storage import describe as describe_storage_error

app = typer.Typer(
    name="rkd", no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
    help="Distil retrieval models from stored teacher scores.",
)
app.add_typer(data_cmd.app, name="data")
app.add_typer(models_cmd.app, name="models")
app.add_typer(retrieve_cmd.app, name="retrieve")
app.add_typer(queries_cmd.app, name="queries")
app.command("score")(score_cmd.score)
app.add_typer(score_cmd.app, name="scores")
app.command("eval")(eval_cmd.eval_runs)
app.command("train")(train_cmd.train)
app.add_typer(index_cmd.app, name="index")
app.command("search")(index_cmd.search)
app.command("verify")(verify_cmd.verify)
app.command("bench")(bench_cmd.bench)
run_cmd.register(app)


@app.callback()
def _global_options(
    lock_wait: float = typer.Option(None, "--lock-wait", min=0, metavar="SECONDS", help=(
        "When another process holds the lock of an output this command writes (an index, a "
        "model, a score store, a run root), wait up to this long for it instead of failing at "
        f"once (default ${WAIT_ENV}, else 0).")),
) -> None:
    if lock_wait is not None:  # the environment carries it to every stage, in this process or not
        os.environ[WAIT_ENV] = f"{lock_wait:g}"


def _quiet_libraries() -> None:
    """Our own progress bars replace transformers' per-load "Loading weights" bars."""
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover - transformers is a core dependency
        pass


def _usage_errors() -> tuple[type, ...]:
    """Click's exception class, and the copy of click that newer typer releases vendor."""
    out: list[type] = []
    try:
        import click

        out.append(click.ClickException)
    except ImportError:  # pragma: no cover
        pass
    try:
        from typer._click.exceptions import ClickException

        out.append(ClickException)
    except ImportError:  # typer that uses click itself
        pass
    return tuple(out)


def _redacting_excepthook(kind, value, tb) -> None:
    """An unexpected error's traceback, printed as Python would but without credentials."""
    import traceback

    sys.stderr.write(redact("".join(traceback.format_exception(kind, value, tb))))


def main() -> None:
    _quiet_libraries()
    sys.excepthook = _redacting_excepthook
    try:
        rc = app(standalone_mode=False)  # without standalone mode click returns typer.Exit's code
        if isinstance(rc, int) and not isinstance(rc, bool) and rc:
            sys.exit(rc)
    except RkdError as e:
        console.print(f"[bold red]error:[/] {escape(redact(e))}", highlight=False, soft_wrap=True)  # text, not markup
        sys.exit(2)
    except (typer.Exit, SystemExit) as e:
        sys.exit(getattr(e, "exit_code", getattr(e, "code", 0)))
    except (typer.Abort, KeyboardInterrupt):
        console.print("aborted")
        sys.exit(130)
    except _usage_errors() as e:  # a bad option or value: click's usage message, no traceback
        e.show()
        sys.exit(e.exit_code)
    except Exception as e:  # a file-system failure (a full disk, no permission): one line with the path
        line = describe_storage_error(e)
        if line is None:
            raise
        console.print(f"[bold red]error:[/] {escape(redact(line))}", highlight=False, soft_wrap=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
