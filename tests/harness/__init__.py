"""Test harness: private Postfix instances and SMTP sinks on loopback.

Import as ``harness`` with ``tests/`` on ``sys.path`` (``tests/e2e/conftest.py`` and
``bench/_postfix.py`` take care of that).
"""
