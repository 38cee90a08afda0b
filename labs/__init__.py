"""labkit: the containers workshop, run and checked on real lab machines over SSH."""

__version__ = "0.1.0"
