from mtcnn.nets.mtcnn_nets import NETS, ONet, PNet, RNet, build_net

__all__ = ["NETS", "ONet", "PNet", "RNet", "build_net"]
