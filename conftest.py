"""Root conftest: Hypothesis profiles for every suite (see accval/testing.py).

The ``--producer``/``--consumer`` options, the ``gpu`` marker and the implementation fixtures come
from the ``accval`` pytest plugin (``accval/pytest_plugin.py``, installed as an entry point by
``pip install -e .``), so a user's repository gets them too with ``pytest --pyargs accval.suites.kernel``.
"""

from accval.testing import register_profiles

register_profiles()
