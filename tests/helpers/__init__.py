"""What several test modules share: the repository's folders, and the generators in this package's modules.

No test module imports another; what two of them need lives here or in ``tests/conftest.py`` (fixtures).
"""
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
ROOT = TESTS.parent
DATA = TESTS / "data"
