"""Fixtures for every test: the real stand-in servers (moto, ...) of tests/stand_ins.py."""

pytest_plugins = ["stand_ins"]
