"""drossel: transport-based enforcement against out-of-date mail servers."""

__version__ = "0.1.0"
