"""Regenerate ``csi_pb2.py``, ``csi_pb2.pyi`` and ``csi_pb2_grpc.py`` from ``csi.proto`` (grpcio-tools, a dev extra).

The generated files are committed so that installing stackway needs no protoc; run this after editing the
``.proto``: ``python -m stackway.openstack.csi.proto.regenerate``. Paths are relative to the package's ``src``
root so the generated gRPC module imports ``csi_pb2`` by its package path.
"""

from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path


def main() -> int:
    from grpc_tools import protoc

    here = Path(__file__).resolve().parent
    src = here.parents[3]
    proto = here / "csi.proto"
    include = str(resources.files("grpc_tools") / "_proto")
    args = [
        "grpc_tools.protoc",
        f"-I{src}",
        f"-I{include}",
        f"--python_out={src}",
        f"--pyi_out={src}",
        f"--grpc_python_out={src}",
        str(proto.relative_to(src)),
    ]
    return int(protoc.main(args))


if __name__ == "__main__":
    sys.exit(main())
