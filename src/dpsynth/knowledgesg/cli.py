"""``dpsynth server ...`` and ``dpsynth client ...``: the two sides of KnowledgeSG.

``dpsynth client run`` is ``dpsynth run --method knowledgesg``: it is defined in ``dpsynth/cli.py``, beside
``run``, so that this module never imports the main CLI (which imports it).
"""

from __future__ import annotations

import secrets

import typer

server_app = typer.Typer(
    pretty_exceptions_show_locals=False,
    no_args_is_help=True,
    help="KnowledgeSG server: holds the models, never private data.",
)
client_app = typer.Typer(
    pretty_exceptions_show_locals=False,
    no_args_is_help=True,
    help="KnowledgeSG client: DP-fine-tunes locally, sends the adapter.",
)


@server_app.command("start", help="Start the HTTP service (foreground; Ctrl-C stops it, jobs resume on restart).")
def server_start(
    config: str = typer.Option(..., "--config", help="Server YAML (host, port, state_dir, models, clients)."),
    host: str | None = typer.Option(None, "--host", help="Override the config's host."),
    port: int | None = typer.Option(None, "--port", help="Override the config's port."),
) -> None:
    from dpsynth.extras import require

    require("dpsynth server start", "server")  # fastapi, uvicorn, gguf: server.py and serving.py import them
    from dpsynth.knowledgesg.server_config import load_server_config
    from dpsynth.knowledgesg.serving import serve

    serve(load_server_config(config, {"host": host, "port": port}))


@server_app.command("token", help="Make a new client token; prints it once and the line for server.yaml.")
def server_token(client_id: str = typer.Argument(..., help="Client id (1 to 64 letters, digits, - and _).")) -> None:
    from dpsynth.errors import ConfigError
    from dpsynth.knowledgesg.jobs import CLIENT_ID_RULE, token_hash, valid_client_id

    # the server config applies the same rule: refuse here rather than print a line it would reject
    if not valid_client_id(client_id):
        raise ConfigError(f"client id {client_id[:64]!r}: use {CLIENT_ID_RULE} only")

    token = secrets.token_urlsafe(32)
    typer.echo(f"token for {client_id} (give it to the client as DPSYNTH_TOKEN; it is not stored anywhere):")
    typer.echo(f"  {token}")
    typer.echo("add to server.yaml under clients:")
    typer.echo(f"  {client_id}: {{token_sha256: {token_hash(token)}}}")
