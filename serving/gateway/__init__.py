"""The gateway: one KServe v2 REST and gRPC endpoint routing each model across its versions."""
