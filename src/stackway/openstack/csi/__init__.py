"""A CSI driver for Cinder: Kubernetes volumes as Cinder volumes, attached to nodes through Nova.

Layout: ``rules`` is pure (sizes, capabilities, topology, parameters, page tokens); ``controller`` and
``node`` are the gRPC servicers; ``host`` runs the node's block-device tools (blkid, mkfs, mount, resize);
``server`` serves them on a unix socket; ``cli`` is ``stackway csi``.
"""
