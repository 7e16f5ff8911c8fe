"""The `ihl` app: every command, imported from its module and registered here, in help order."""

from __future__ import annotations

import typer

from ihl.cli import data, detector, export, model, pipeline, predict, registry, stages, weights

app = typer.Typer(
    help="Implicit Heatmap Learning: train, evaluate, export and serve pose models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

COMMANDS = {
    "presets": model.presets,
    "model-info": model.model_info_cmd,
    "import-checkpoint": model.import_checkpoint_cmd,
    "synth": stages.synth_cmd,
    "train": stages.train_cmd,
    "prepare": stages.prepare_cmd,
    "evaluate": stages.evaluate_cmd,
    "predict": predict.predict_cmd,
    "show-gt": predict.show_gt_cmd,
    "export": export.export_cmd,
}
for name, command in COMMANDS.items():
    app.command(name)(command)

app.add_typer(model.config_app, name="config")
app.add_typer(data.app, name="data")
app.add_typer(detector.app, name="detector")
app.add_typer(pipeline.app, name="pipeline")
app.add_typer(registry.app, name="registry")
app.add_typer(weights.app, name="weights")

if __name__ == "__main__":
    app()
