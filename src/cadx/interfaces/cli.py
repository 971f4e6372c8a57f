"""The ``cadx`` command line: the app and its commands, each defined in its own module (imports point one way:
this module imports the command modules, they import only ``cadx.interfaces.console`` and the engine)."""

from __future__ import annotations

import typer

from cadx.interfaces import commands, explain_cli, serve_cli, tabular_cli

app = typer.Typer(help="cadx: train, evaluate and use CNNs that classify medical images.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)

app.command("models")(commands.models_command)
app.command("train")(commands.train_command)
app.command("evaluate")(commands.evaluate_command)
app.command("predict")(commands.predict_command)
app.command("explain")(explain_cli.explain_command)
app.command("compare")(commands.compare_command)
app.command("export")(commands.export_command)
app.command("fit-ood")(commands.fit_ood_command)
app.command("calibrate")(commands.calibrate_command)
app.command("tabular")(tabular_cli.tabular_command)
app.command("serve")(serve_cli.serve_command)
app.add_typer(serve_cli.users_app, name="users")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
