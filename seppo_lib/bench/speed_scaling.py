"""Scaling figures of `seppo bench speed --scaling` (world model) and the presets' seconds per round.

- **Bank size K**: one round of the world workload after the bank holds K checkpoints (K = 1…32), with
  the reference drawn uniformly once per round and once per update (`bank.reference_resample`). The
  bank lives on an S3 server (moto's, over loopback HTTP, started in this process; a local folder
  where moto is not installed: the row's `store` says which) and is filled with copies of its last
  checkpoint (real bank commits with their training state, so the next round trains from it); every
  copy is a distinct checkpoint to download, load and swap. Also reported: distinct references and
  swaps of the round (from its plan) and the bytes the round newly downloaded into the local
  checkpoint cache (a cache hit downloads nothing).
- **Sampling shards**: the round's reference samples split over 1, 2 and 4 worker processes
  (`sample_reference.run(shard, n_shards)`, each with max(1, cores / n) torch threads), spawned the
  same way for all, wall clock including process start and the sampling time inside the workers.
- **Data size**: prepare time (render + encode + shard) and one round's time vs `data.max_rows`: a
  round's work is `samples_per_round` whatever the data size, so only preparation should grow.
- **Reference-weight cache**: host memory the trainer's `ReferenceModel` cache holds per cached
  checkpoint (RSS growth and tensor bytes), for full fine-tuning.
"""

from __future__ import annotations

import contextlib
import json
import logging
import multiprocessing
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from seppo_lib.bench.speed_models import MODELS
from seppo_lib.bench.speed_project import prepare, project_config, project_round

logger = logging.getLogger(__name__)

BANK_SIZES = (1, 2, 4, 8, 16, 32)
SHARDS = (1, 2, 4)
DATA_SIZES = (64, 512, 2048)
S3_BUCKET = "seppo-bench"


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def _grow_bank(cfg: Any, size: int) -> None:
    """Commit copies of the bank's last checkpoint until it holds `size` entries (rounds 0..size-1)."""
    from seppo_lib.bank import checkpoint_id
    from seppo_lib.steps.common import open_bank

    bank = open_bank(cfg)
    while len(bank.entries()) < size:
        last = bank.entries()[-1]
        with tempfile.TemporaryDirectory() as tmp:
            shutil.copytree(bank.fetch(last.id) / "unet", Path(tmp) / "unet")
            step = last.step + cfg.train.updates_per_round
            state = bank.fetch(last.id) / "state"
            if state.is_dir():
                shutil.copytree(state, Path(tmp) / "state")
                doc = json.loads((Path(tmp) / "state" / "trainer.json").read_text())
                doc["progress"] = {"global_step": step, "samples_seen": (last.round + 1) * cfg.samples_per_round}
                (Path(tmp) / "state" / "trainer.json").write_text(json.dumps(doc))
            bank.commit(tmp, checkpoint_id(step), round_idx=last.round + 1, step=step, parent=last.id)


def _plan_refs(cfg: Any, data_dir: Path) -> tuple[int, int]:
    """(distinct references, reference swaps) of the bank's next round, from its plan."""
    from seppo_lib.data.shards import LatentDataset
    from seppo_lib.steps.common import open_bank
    from seppo_lib.training.references import plan_round

    bank = open_bank(cfg)
    k = max(e.round for e in bank.entries()) + 1
    ids = plan_round(cfg, bank, k, len(LatentDataset(data_dir))).ref_ids
    return len(set(ids)), 1 + sum(a != b for a, b in zip(ids, ids[1:], strict=False))


@contextlib.contextmanager
def _bank_store(mode: str) -> Iterator[tuple[str, tuple[str, ...]]]:
    """(store name, config overrides) of the bank: S3 on an in-process moto server, else a local folder."""
    try:
        from moto.server import ThreadedMotoServer
    except ImportError:
        logger.warning("moto is not installed: the bank-size curve uses a local bank (pip install 'moto[server]' for S3)")
        yield "local folder", ()
        return
    import boto3

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one INFO line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    keys = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    os.environ.update({k: v or "bench" for k, v in keys.items()})
    try:
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=S3_BUCKET)
        yield "S3 (moto server, loopback HTTP)", (f"bank.uri=s3://{S3_BUCKET}/bank-{mode}", f"storage.s3_endpoint_url={endpoint}",
                                                  "storage.s3_addressing_style=path", "storage.s3_region=us-east-1")  # fmt: skip
    finally:
        server.stop()
        for k, v in keys.items():
            if v is None:
                os.environ.pop(k, None)


def bank_size_curve(options: Any) -> list[dict[str, Any]]:
    """Round wall time vs bank size, per resample mode (one bank per mode, grown between points)."""
    model = MODELS["world"]
    w = model.workload(options.device, options.quick)
    rows = []
    for mode in ("round", "step"):
        work = options.workdir / f"scaling-bank-{mode}"
        shutil.rmtree(work, ignore_errors=True)
        with _bank_store(mode) as (store, bank_overrides):
            cfg = project_config(model, work, w, options.precision, (f"bank.reference_resample={mode}", *bank_overrides))
            data_dir = prepare(cfg)
            cache = Path(cfg.bank.cache_dir)
            for size in BANK_SIZES:
                _grow_bank(cfg, size)
                distinct, swaps = _plan_refs(cfg, data_dir)
                before = _dir_bytes(cache)
                timing = project_round(cfg, data_dir, options.device)
                rows.append({"resample": mode, "bank_size": size, "distinct_refs": distinct, "swaps": swaps, "store": store,
                             "cache_bytes_fetched": _dir_bytes(cache) - before, **timing.as_dict()})  # fmt: skip
                logger.info("bank %d (%s, %s): %.2f s", size, mode, store, timing.seconds)
        shutil.rmtree(work, ignore_errors=True)
    return rows


def data_size_curve(options: Any) -> list[dict[str, Any]]:
    """Prepare time and one round's time of the world workload vs data.max_rows (a fresh run per size)."""
    model = MODELS["world"]
    w = model.workload(options.device, options.quick)
    rows = []
    for size in DATA_SIZES[:2] if options.quick else DATA_SIZES:
        work = options.workdir / f"scaling-data-{size}"
        shutil.rmtree(work, ignore_errors=True)
        cfg = project_config(model, work, w, options.precision, (f"data.max_rows={size}", "data.shard_size=256"))
        start = time.perf_counter()
        data_dir = prepare(cfg)
        prepare_s = time.perf_counter() - start
        timing = project_round(cfg, data_dir, options.device)
        rows.append({"max_rows": size, "prepare_s": prepare_s, **timing.as_dict()})
        logger.info("data %d rows: prepare %.1f s, round %.2f s", size, prepare_s, timing.seconds)
        shutil.rmtree(work, ignore_errors=True)
    return rows


def _shard_worker(cfg_json: str, data_dir: str, round_idx: int, out: str, shard: int, n_shards: int, threads: int) -> float:
    """One sampling worker (a fresh process): its sampling seconds."""
    from seppo_lib.config import SeppoConfig
    from seppo_lib.steps import sample_reference

    torch.set_num_threads(threads)
    start = time.perf_counter()
    sample_reference.run(SeppoConfig.from_json(cfg_json), data_dir, round_idx, out, shard, n_shards)
    return time.perf_counter() - start


def shard_curve(options: Any) -> list[dict[str, Any]]:
    """Sampling wall time of the world round over 1, 2 and 4 spawned worker processes, alternated `repeats` times."""
    model = MODELS["world"]
    w = model.workload(options.device, options.quick)
    work = options.workdir / "scaling-shards"
    cfg = project_config(model, work, w, options.precision)
    data_dir = prepare(cfg)
    cores = os.cpu_count() or 1
    context = multiprocessing.get_context("spawn")
    rows = []
    for _ in range(max(1, options.repeats - 1)):
        for n in SHARDS:
            threads = max(1, cores // n)
            args = [(cfg.to_json(), str(data_dir), 1, str(work / f"refs-{n}-{i}"), i, n, threads) for i in range(n)]
            start = time.perf_counter()
            with context.Pool(n) as pool:
                inside = pool.starmap(_shard_worker, args)
            rows.append({"shards": n, "threads_per_worker": threads, "wall_s": time.perf_counter() - start,
                         "sampling_s": max(inside), "samples": w.pairs})  # fmt: skip
    return rows


def cache_memory(options: Any, sizes: int = 4) -> list[dict[str, Any]]:
    """RSS growth and tensor bytes of the trainer's reference cache per cached checkpoint (world, tiny-vae)."""
    from seppo_lib.bench.speed_measure import _status_kib
    from seppo_lib.steps.common import open_bank
    from seppo_lib.training.trainer import ReferenceModel

    rows = []
    for name in ("world", "tiny-vae"):
        model = MODELS[name]
        w = model.workload(options.device, options.quick)
        cfg = project_config(model, options.workdir / f"scaling-cache-{name}", w, options.precision)
        prepare(cfg)
        _grow_bank(cfg, sizes)
        bank = open_bank(cfg)
        ids = bank.ids()
        ref = ReferenceModel(bank.fetch(ids[0]) / "unet", bank, torch.device(options.device), cache_size=sizes)
        base = _status_kib("VmRSS")
        for n, ckpt in enumerate(ids, start=1):
            ref.use(ckpt)
            tensor_bytes = sum(t.numel() * t.element_size() for weights in ref.swap.cache.values() for t in weights.values())
            rows.append({"model": name, "cached": n, "rss_growth_bytes": (_status_kib("VmRSS") - base) * 1024,
                         "tensor_bytes": tensor_bytes, "trainable": "full"})  # fmt: skip
        shutil.rmtree(options.workdir / f"scaling-cache-{name}", ignore_errors=True)
    return rows


def run_scaling(options: Any) -> dict[str, Any]:
    return {"bank_size": bank_size_curve(options), "shards": shard_curve(options), "data_size": data_size_curve(options),
            "cache_memory": cache_memory(options)}  # fmt: skip


def preset_rounds(preset: str, options: Any) -> dict[str, Any]:
    """Seconds per round of a preset as `seppo train` runs it (tracking off, a fresh work folder)."""
    from seppo_lib.config import load_config
    from seppo_lib.identity import resolve
    from seppo_lib.orchestrate import ensure_prepared, run_rounds

    work = options.workdir / f"preset-{preset}"
    shutil.rmtree(work, ignore_errors=True)
    cfg = resolve(load_config(preset, [f"workdir={work}", f"bank.uri={work / 'bank'}", f"bank.cache_dir={work / 'cache'}",
                                       "tracking.enabled=false"]))  # fmt: skip
    start = time.perf_counter()
    ensure_prepared(cfg)
    prepare_s = time.perf_counter() - start
    rounds = []
    for k in range(1, cfg.train.n_rounds + 1):
        start = time.perf_counter()
        run_rounds(cfg, first=k, last=k)
        rounds.append(time.perf_counter() - start)
    shutil.rmtree(work, ignore_errors=True)
    return {"prepare_s": prepare_s, "round_s": rounds, "pairs_per_round": cfg.samples_per_round,
            "samples_per_round": cfg.samples_per_round, "sampler_steps": cfg.sampling.num_inference_steps}  # fmt: skip
