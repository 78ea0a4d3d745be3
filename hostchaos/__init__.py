"""hostchaos: inject real faults into a Linux host, and always take them back out."""

__version__ = "0.1.0"
