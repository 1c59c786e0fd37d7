"""The original pull request's test, reimplemented as a baseline suite (for ``accval mutants``)."""
