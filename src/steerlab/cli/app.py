"""Entry point: the root Typer app and the registration of every area's commands."""

from __future__ import annotations

import typer

from steerlab.cli import bench, core, hub, kits, serve
from steerlab.errors import SteerlabError

app = typer.Typer(
    help="Extract, compose, share, evaluate and serve steering vectors.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
core.register(app)
# Areas register here, one line each: e.g. `hub.register(app)`.
kits.register(app)
hub.register(app)
serve.register(app)
bench.register(app)


def main() -> None:
    try:
        app()
    except SteerlabError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise SystemExit(2) from exc


if __name__ == "__main__":
    main()
