"""Generated protobuf code for vgw.config.v1 (from proto/vgw/config/v1/*.proto).

`make setup` (scripts/setup.sh) writes config_pb2.py and config_pb2.pyi here; they are built, not
edited or committed.
"""
