"""`python -m torchjob_operator`."""

import sys

from torchjob_operator.main import main

sys.exit(main())
