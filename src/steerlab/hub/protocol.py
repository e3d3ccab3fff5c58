"""What the HTTP server and client agree on."""

API = "/api/v1"
SIGNATURE_HEADER = "x-steerlab-signature"
PUBLIC_KEY_HEADER = "x-steerlab-public-key"
