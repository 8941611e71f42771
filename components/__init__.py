"""One thin KFP component per pipeline step; each calls exactly one `seppo_lib.steps.<step>.run`.

Module level imports are the standard library and kfp only (seppo_lib and torch are imported
inside the component bodies, which run on the seppo image), so compiling never needs torch.
"""

from components._common import IMAGE, VERSION
from components.evaluate import evaluate
from components.prepare_data import prepare_data
from components.register import register
from components.sample_reference import sample_reference
from components.train_round import train_round
from components.validate_config import validate_config

__all__ = [
    "IMAGE",
    "VERSION",
    "evaluate",
    "prepare_data",
    "register",
    "sample_reference",
    "train_round",
    "validate_config",
]
