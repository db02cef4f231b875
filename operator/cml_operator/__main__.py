"""``python -m cml_operator`` is the ``cml-operator`` command."""

import sys

from .cli import main

sys.exit(main())
