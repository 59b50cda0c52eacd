"""CSI v1 messages and gRPC stubs, generated from ``csi.proto`` (regenerate with ``regenerate.py``)."""
