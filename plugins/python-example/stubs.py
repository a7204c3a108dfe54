"""Generates the Python stubs for the project's proto/plugin.proto with grpcio-tools
and imports them. Nothing generated is committed: the stubs live in a cache directory
keyed by the proto's content, made once per change and shared by later starts."""

import hashlib
import os
import shutil
import sys
import tempfile
from pathlib import Path

# plugins/python-example/stubs.py -> <repo>/proto/proto/plugin.proto
DEFAULT_PROTO = Path(__file__).resolve().parent.parent.parent / "proto" / "proto" / "plugin.proto"


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "plughost-python-example"


def load(proto: Path = DEFAULT_PROTO, cache_dir: Path | None = None):
    """Returns the (plugin_pb2, plugin_pb2_grpc) modules, generating them if needed."""
    import grpc_tools
    from grpc_tools import protoc

    proto = Path(proto).resolve()
    cache_dir = Path(cache_dir or default_cache_dir())
    digest = hashlib.sha256(proto.read_bytes() + grpc_tools.__file__.encode()).hexdigest()[:16]
    out = cache_dir / digest
    if not (out / "plugin_pb2_grpc.py").exists():
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix="gen-", dir=cache_dir))
        include = Path(grpc_tools.__file__).parent / "_proto"
        code = protoc.main([
            "grpc_tools.protoc",
            f"-I{proto.parent}",
            f"-I{include}",
            f"--python_out={tmp}",
            f"--grpc_python_out={tmp}",
            str(proto),
        ])
        if code != 0:
            shutil.rmtree(tmp, ignore_errors=True)
            raise RuntimeError(f"grpc_tools.protoc failed on {proto} (exit {code})")
        try:
            # Atomic: a concurrent start either wins this rename or finds the result.
            os.rename(tmp, out)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
            if not (out / "plugin_pb2_grpc.py").exists():
                raise
    if str(out) not in sys.path:
        sys.path.insert(0, str(out))
    import plugin_pb2  # noqa: E402  (generated)
    import plugin_pb2_grpc  # noqa: E402  (generated)

    return plugin_pb2, plugin_pb2_grpc
