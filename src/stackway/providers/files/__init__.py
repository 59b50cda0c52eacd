"""Standalone mode's source of objects: Kubernetes manifests in a watched directory."""

from stackway.providers.files.loader import (
    DirectoryResult,
    FileProblem,
    FileResult,
    load_directory,
    load_file,
)
from stackway.providers.files.watcher import FilesProvider, OnChange, ProviderState

__all__ = [
    "DirectoryResult",
    "FileProblem",
    "FileResult",
    "FilesProvider",
    "OnChange",
    "ProviderState",
    "load_directory",
    "load_file",
]
