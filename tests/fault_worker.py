"""Training process for the SIGKILL fault test: `python tests/fault_worker.py a.b=value ...`.

Loads the `tiny` preset with the given overrides, prints READY once the heavy imports (torch,
diffusers' model classes: ~10 s on a loaded CPU) are done, so the test's kill points fall in
real work, runs `seppo_lib.orchestrate.run_rounds` (which resumes from the last committed
round) and prints DONE <final checkpoint>. Log lines go to
stdout so the test can say where each kill landed. The bank's S3 endpoint comes from env
AWS_ENDPOINT_URL.
"""

from __future__ import annotations

import logging
import sys


def main(overrides: list[str]) -> int:
    import accelerate  # noqa: F401 - heavy imports before READY, so kill delays count work only
    import diffusers  # noqa: F401
    import torch
    from diffusers import AutoencoderKL, DDPMScheduler, MotionAdapter, UNet2DConditionModel, UNetMotionModel  # noqa: F401

    from seppo_lib.config import load_config
    from seppo_lib.orchestrate import run_rounds
    from seppo_lib.tracking import InMemoryLogger

    torch.set_num_threads(1)
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(name)s: %(message)s")
    for noisy in ("botocore", "boto3", "s3transfer", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    cfg = load_config("tiny", overrides)
    print("READY", flush=True)
    summary = run_rounds(cfg, InMemoryLogger())
    print(f"DONE {summary.final_checkpoint}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
