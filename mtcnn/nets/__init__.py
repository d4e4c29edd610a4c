"""Nets and their registry. Importing this package registers every built-in net.

Adding a net: one module here that defines it and calls :func:`register_net`, plus its import
below (see /docs or the registry module docstring).
"""

from mtcnn.nets.registry import HEAD_NAMES, NetSpec, UnknownNetError, build_net, get_net_spec, net_names, register_net
from mtcnn.nets.mtcnn_nets import MTCNN_NETS, ONet, PNet, RNet  # noqa: E402  (registers pnet, rnet, onet)
from mtcnn.nets import cascade  # noqa: E402,F401  (registers the 23 Sun et al. landmark nets)
from mtcnn.nets import keypoints, mobilenet  # noqa: E402,F401  (register kp68_*, mobilenet_l1/l2)
from mtcnn.nets import pcn  # noqa: E402,F401  (registers pcn1, pcn2, pcn3)

__all__ = [
    "HEAD_NAMES", "MTCNN_NETS", "NetSpec", "ONet", "PNet", "RNet", "UnknownNetError",
    "build_net", "get_net_spec", "net_names", "register_net",
]
