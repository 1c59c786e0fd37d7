"""The kernel property suite: ``pytest suites/kernel`` (or ``pytest --pyargs accval.suites.kernel``)."""
