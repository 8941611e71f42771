"""Two live writers of one checkpoint id (a KFP retry while the first pod still runs), as two
processes started at several offsets, on LocalStore and on the S3 test server: exactly one wins,
the loser gets one CheckpointError line and leaves no keys, the committed checkpoint verifies."""

from __future__ import annotations

import multiprocessing
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from seppo_lib.bank import CheckpointBank
from seppo_lib.bank_admin import show_run
from seppo_lib.errors import CheckpointError
from seppo_lib.storage import open_store

pytestmark = pytest.mark.servers
CKPT = "ckpt-000004"
OFFSETS = (0.0, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5)  # seconds between the two writers' starts
REPEATS = 2
FILES, FILE_BYTES, UPLOAD_DELAY = 4, 64 * 1024, 0.05  # each upload takes >= 50 ms: the commits overlap


def _src(root: Path, tag: str) -> Path:
    for i in range(FILES):
        path = root / tag / "unet" / f"part-{i}.safetensors"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(FILE_BYTES))
    return root / tag


def _writer(uri: str, run_id: str, cache: str, src: str, start_at: float, results: Any) -> None:
    """One writer process: wait for its start time, then commit `src` as CKPT with slow uploads."""
    bank = CheckpointBank(open_store(uri), run_id, cache)
    upload = bank.store.put_file

    def slow_upload(local: Any, key: str) -> None:
        time.sleep(UPLOAD_DELAY)
        upload(local, key)

    bank.store.put_file = slow_upload  # type: ignore[method-assign]
    time.sleep(max(0.0, start_at - time.time()))
    try:
        bank.commit(src, CKPT, round_idx=1, step=4, parent="initial")
        results.put((src, "won", ""))
    except CheckpointError as err:
        results.put((src, "lost", str(err)))
    except BaseException as err:  # noqa: BLE001 - reported to the test, which fails on it
        results.put((src, "error", repr(err)))


def _race(uri: str, tmp: Path, run_id: str, offset: float) -> tuple[str, str]:
    """Two writers of CKPT in run `run_id`, the second `offset` s later: (winner's src, loser's message)."""
    bank = CheckpointBank(open_store(uri), run_id, tmp / "cache-setup")
    bank.commit(_src(tmp, f"{run_id}-initial"), "initial", round_idx=0, step=0, parent=None)
    srcs = [_src(tmp, f"{run_id}-a"), _src(tmp, f"{run_id}-b")]
    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()
    start = time.time() + 0.5
    procs = [ctx.Process(target=_writer, args=(uri, run_id, str(tmp / f"cache-{i}"), str(src), start + i * offset, results))
             for i, src in enumerate(srcs)]  # fmt: skip
    for p in procs:
        p.start()
    got = sorted((results.get(timeout=120) for _ in procs), key=lambda r: r[1], reverse=True)
    for p in procs:
        p.join(timeout=60)
    assert [r[1] for r in got] == ["won", "lost"], got
    return got[0][0], got[1][2]


@pytest.fixture(params=["local", "s3"])
def bank_root(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return str(request.getfixturevalue("s3_bucket")) if request.param == "s3" else str(tmp_path / "bank")


def test_two_live_writers_of_one_id_never_corrupt_the_commit(bank_root: str, tmp_path: Path) -> None:
    outcomes: Counter[str] = Counter()
    for offset in OFFSETS:
        for rep in range(REPEATS):
            run_id = f"race-{int(offset * 1000)}-{rep}"
            winner, message = _race(bank_root, tmp_path, run_id, offset)
            reader = CheckpointBank(open_store(bank_root), run_id, tmp_path / f"reader-{run_id}")
            local = reader.fetch(CKPT)  # every sha256 checked against the manifest
            for path in Path(winner).rglob("*.safetensors"):
                assert (local / path.relative_to(winner)).read_bytes() == path.read_bytes()
            assert "\n" not in message and CKPT in message, message
            assert show_run(bank_root, run_id)[1] == {}  # the loser left no keys behind
            outcomes["lost at the manifest write" if "concurrently" in message else "refused before uploading"] += 1
            outcomes["first starter won" if winner.endswith("-a") else "second starter won"] += 1
    runs = len(OFFSETS) * REPEATS
    print(f"\ntwo writers on {bank_root.split(':')[0] if '://' in bank_root else 'local'}: {runs} runs, "
          f"offsets {OFFSETS} s x {REPEATS}: {runs} committed checkpoints verified, {dict(outcomes)}")
