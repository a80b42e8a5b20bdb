"""Feature browser: an SAE run's latents by id or by token (view: app/features.py)."""
import sys; from pathlib import Path  # noqa: E401,E702
if (_root := str(Path(__file__).resolve().parents[2])) not in sys.path:  # the repository root
    sys.path.insert(0, _root)
from app.features import feature_browser_page  # noqa: E402
feature_browser_page()
