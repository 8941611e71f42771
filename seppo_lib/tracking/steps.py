"""One MLflow child run per pipeline step, under the run tree of `cfg.run_id`.

`step_tracking(cfg, step)` opens the step's logger (flattened config as params, lineage
tags, the resolved config as an artifact), replays spools left by an earlier attempt of
the same step whose tracking server was unreachable, and closes the run at the end. A step
that raises ends its run and the pipeline's parent run FAILED (spooled like the rest when
the server is unreachable); the pipeline's last step (register) ends the parent FINISHED.
With `tracking.enabled: false` it yields a NullLogger.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from seppo_lib.config import SeppoConfig
from seppo_lib.tracking.base import NullLogger, RunLogger

logger = logging.getLogger(__name__)


def spool_dir(cfg: SeppoConfig) -> Path:
    return Path(cfg.workdir) / cfg.run_id / "mlflow-spool"


def replay_pending(cfg: SeppoConfig, step: str, tracking_uri: str) -> int:
    """Upload spools of earlier attempts of `step`; returns how many were replayed."""
    from seppo_lib.tracking.mlflow_logger import TrackingError, probe, replay_spool

    files = sorted(spool_dir(cfg).glob(f"{step}-*.jsonl"))
    if not files or probe(tracking_uri) is not None:
        return 0
    done = 0
    for path in files:
        try:
            replay_spool(path, tracking_uri)
            done += 1
        except TrackingError as err:
            logger.warning("could not replay %s: %s", path, err)
    return done


@contextmanager
def step_tracking(cfg: SeppoConfig, step: str, tags: dict[str, str] | None = None) -> Iterator[RunLogger]:
    if not cfg.tracking.enabled:
        yield NullLogger()
        return
    from seppo_lib.tracking.mlflow_logger import MlflowLogger, config_params, lineage_tags, resolve_tracking_uri

    uri = resolve_tracking_uri(cfg)
    replayed = replay_pending(cfg, step, uri)
    if replayed:
        logger.info("replayed %d spooled MLflow run(s) of step %s", replayed, step)
    lineage = lineage_tags(cfg.config_hash(), bank_uri=cfg.bank.uri, bank_run_id=cfg.run_id)
    run = MlflowLogger.open(
        uri,
        cfg.tracking.experiment,
        run_name=f"{step}",
        tags={"seppo.step": step, **lineage, **(tags or {})},
        seppo_run_id=cfg.run_id,
        parent_tags={**lineage, "seppo.config_name": cfg.name},
        spool_path=spool_dir(cfg) / f"{step}-{uuid.uuid4().hex[:8]}.jsonl",
    )
    run.log_params(config_params(cfg))
    config_file = Path(cfg.workdir) / cfg.run_id / "config.json"
    config_file.parent.mkdir(parents=True, exist_ok=True)
    config_file.write_text(json.dumps(json.loads(cfg.to_json()), indent=1))
    run.log_artifact(config_file)
    failed = True
    try:
        yield run
        failed = False
    finally:
        run.close("FAILED" if failed else "FINISHED", end_parent=failed)  # a failed step fails the pipeline
