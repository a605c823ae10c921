"""Turn expected failures into one clear line and a non-zero exit, never a stack trace."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import typer
from pydantic import ValidationError
from rich.console import Console

console = Console()
error_console = Console(stderr=True)

#: Errors a user can fix from the message alone (bad input, missing file, service down).
USER_ERRORS = (ValueError, FileNotFoundError, ConnectionError, PermissionError)


@contextmanager
def user_errors() -> Iterator[None]:
    try:
        yield
    except ValidationError as exc:
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"]) or "input"
            error_console.print(f"[red]error:[/red] {field}: {err['msg']}")
        raise typer.Exit(code=2) from None
    except USER_ERRORS as exc:
        error_console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(code=2) from None
