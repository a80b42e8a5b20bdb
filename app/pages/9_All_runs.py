"""Any run, of any kind, through its kind's view (or the generic one)."""
import sys; from pathlib import Path  # noqa: E401,E702
if (_root := str(Path(__file__).resolve().parents[2])) not in sys.path:  # the repository root
    sys.path.insert(0, _root)
from app.ui import any_run_page  # noqa: E402
any_run_page()
