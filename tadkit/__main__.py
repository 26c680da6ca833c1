"""``python -m tadkit`` (also what ``torchrun -m tadkit`` runs)."""
import sys

from tadkit.cli import main

sys.exit(main())
