"""A module that takes two minutes to import: a reader process preloading it is stuck in start-up."""

import time

time.sleep(120)
