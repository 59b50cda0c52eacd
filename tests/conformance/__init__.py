"""Gateway API conformance (HTTPRoute core) against a real `stackway up` and Envoy, on the upstream manifests."""
