"""ciserver: a self-hosted Git webhook CI/CD server."""

__version__ = "0.1.0"
