"""The gRPC adapters: the only part of the broker that imports grpc and celeriac.v1."""
