"""ddi-harness: conformance harness for kernel driver memory routines."""

__version__ = "0.1.0"
