"""What every seppo component shares: the image it runs on and the decorator.

Standard library and kfp only: compiling the pipeline must never import seppo_lib or torch.
The image tag is the package version, read from the text of `seppo_lib/__init__.py`.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

from kfp import dsl

IMAGE_REPOSITORY = "ghcr.io/seppo-ml/seppo"
_VERSION_FILE = Path(__file__).resolve().parent.parent / "seppo_lib" / "__init__.py"


def package_version(init_file: Path = _VERSION_FILE) -> str:
    """`__version__` of seppo_lib, parsed from the file (importing seppo_lib is not allowed here)."""
    match = re.search(r'^__version__\s*=\s*["\']([^"\']+)["\']', init_file.read_text(), re.MULTILINE)
    if not match:
        raise RuntimeError(f"no __version__ = '...' line in {init_file}")
    return match.group(1)


VERSION = package_version()
IMAGE = f"{IMAGE_REPOSITORY}:{VERSION}"

#: Lightweight Python component on the seppo image. kfp is already installed in the image
#: (and in the local environment kfp.local uses), so nothing is pip-installed at run time.
seppo_component = functools.partial(dsl.component, base_image=IMAGE, install_kfp_package=False)
