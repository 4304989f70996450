"""tests/support under an installed name: `kaireon_testkit.pg` is tests/support/pg.py.

The helpers stay where the tests import them (`tests.support.X`); this package
only points its module search path there, so perf/ and other tools import the
same files without editing sys.path. Installed (editable) as a uv workspace
member: see the root pyproject.toml.
"""

from pathlib import Path

__path__ = [str(Path(__file__).resolve().parents[2] / "support")]
