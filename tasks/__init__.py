"""Task plug-ins: one folder per task, listed in ``tasks/registry.py``."""
