"""Adapters for the model servers, behind one small async interface (``base.ModelBackend``)."""
