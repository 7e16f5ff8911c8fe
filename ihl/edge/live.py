"""DVCLive files for a training run: the ``EpochLog`` that ``ihl train`` hands the train stage.

The DVCLive import stays here, inside the methods, so the train stage runs without DVC.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


class LiveLog:
    """Writes ``metrics.json``, ``params.yaml`` and per-metric plots under ``directory``.

    Inside ``dvc repro`` or a DVC repository it is stock DVCLive. Elsewhere stock
    DVCLive runs ``dvc init`` in the enclosing Git repository (treeverse/dvclive#539),
    a side effect no training run should have, so its DVC set-up is skipped there.
    A resumed run appends to the plots it finds; a new one starts them afresh.
    """

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.live: Any = None

    def start(self, params: dict[str, Any], resumed: bool, epoch: int) -> None:
        from dvc.exceptions import NotDvcRepoError
        from dvc.repo import Repo
        from dvclive import Live

        class FilesOnlyLive(Live):
            def _init_dvc(self) -> None:
                """Not in a DVC repository: nothing to register the files with."""

        try:
            in_dvc = bool(Repo.find_root())
        except NotDvcRepoError:
            in_dvc = bool(os.environ.get("DVC_ROOT"))
        live_cls = Live if in_dvc else FilesOnlyLive
        self.live = live_cls(
            dir=str(self.directory), resume=resumed, save_dvc_exp=False, dvcyaml=None
        )
        self.live.log_params(params)
        self.live.step = epoch

    def log_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        self.live.step = epoch
        for name, value in metrics.items():
            self.live.log_metric(name, value)
        self.live.next_step()

    def end(self) -> None:
        self.live.end()
