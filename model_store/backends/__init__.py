"""Storage backends of the model store: one small interface, a local-folder and an S3 implementation."""

from model_store.backends.base import ObjectStorage, StoredObject, open_storage

__all__ = ["ObjectStorage", "StoredObject", "open_storage"]
