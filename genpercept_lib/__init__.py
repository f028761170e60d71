"""genpercept_lib: the thin shared library behind the GenPercept reproduction notebooks."""

__version__ = "0.1.0"
