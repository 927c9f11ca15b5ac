"""The config service: gRPC ``vgw.config.v1.ConfigService`` over the JetStream KV config store."""
