"""Codebook runs: TokFSM purity and patching, code usage, steering (view: app/views/codebook.py)."""
import sys; from pathlib import Path  # noqa: E401,E702
if (_root := str(Path(__file__).resolve().parents[2])) not in sys.path:  # the repository root
    sys.path.insert(0, _root)
from app.ui import kind_page  # noqa: E402
kind_page("codebook")
