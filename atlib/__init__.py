"""atlib: attention transfer (Zagoruyko & Komodakis, ICLR 2017), reproducible end to end."""

import time

__version__ = "0.1.0"
STARTED = time.perf_counter()  # when this process first imported atlib: a job's start-up cost is measured from here

# The built-in methods, into atlib.method's registry: whatever module of atlib reads a config finds them there
from . import methods  # noqa: E402, F401
