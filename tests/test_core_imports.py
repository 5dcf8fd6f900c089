"""The core must import with torch, numpy, einops and torchmetrics alone.

torchmetrics itself imports some optional packages when they are installed, so the check is that the core
adds no heavy module beyond what those four already loaded.
"""

import subprocess
import sys

HEAVY = ["scipy", "sklearn", "skimage", "matplotlib", "cv2", "monai", "lightning", "fastapi", "pypdfium2", "PIL"]


def test_core_imports_without_optional_stacks():
    code = (
        "import sys\n"
        "import torch, numpy, einops, torchmetrics\n"
        f"before = {{m for m in {HEAVY!r} if m in sys.modules}}\n"
        "import clearmamba.uncertainty, clearmamba.evaluation, clearmamba.models, clearmamba.active\n"
        f"added = [m for m in {HEAVY!r} if m in sys.modules and m not in before]\n"
        "assert not added, f'core imported optional stacks: {added}'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
