"""Where the shared ADM reference data lives: ``../shared/golden/adm`` beside the checkout.

``CONDLAB_GOLDEN_ADM`` overrides the location. Locally a missing folder skips the golden
tests with the reason; in CI (``CI`` set) it is an error, so a missing data set can never
pass as green.
"""

import os
from pathlib import Path

import pytest

GOLDEN_ADM = Path(os.environ.get("CONDLAB_GOLDEN_ADM", Path(__file__).resolve().parents[2] / "shared/golden/adm"))


def golden_adm_mark():
    if GOLDEN_ADM.is_dir():
        return pytest.mark.usefixtures()
    if os.environ.get("CI"):
        raise RuntimeError(f"ADM golden data not found at {GOLDEN_ADM} (set CONDLAB_GOLDEN_ADM)")
    return pytest.mark.skip(reason=f"ADM golden data folder not found: {GOLDEN_ADM}")
