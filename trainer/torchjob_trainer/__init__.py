"""torchjob component."""

import time

# Taken before torch is imported (every entry point imports this package first), so the start-up
# phases can tell the interpreter's start from the cost of importing torch.
IMPORTED_AT = time.monotonic()
