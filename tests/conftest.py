"""The leak checker (runtime.testing) is on for the whole suite via pyproject's addopts."""

pytest_plugins = ["pytester"]
