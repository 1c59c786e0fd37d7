"""Root conftest. Everything the suites need comes from the ``accval`` pytest plugin
(``accval/pytest_plugin.py``, installed as an entry point by ``pip install -e .``): the Hypothesis
profiles (``accval/testing.py``), the ``--producer``/``--consumer`` options, the markers and the
implementation fixtures, so a user's repository gets them too with ``pytest --pyargs accval.suites.kernel``.
Without the install, ``-p accval.pytest_plugin`` loads it.
"""
