"""Pure xDS builders: IR → Envoy protobufs, validated and deterministic."""
