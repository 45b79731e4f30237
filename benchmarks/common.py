"""Run as ``python benchmarks/x.py`` from the repository root: this puts the root on ``sys.path``."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
